"""Issue 12 item 2 on real sockets: idle-connection floods against every endpoint of
authority 3 (intake, worker port before the Hello, metrics, its primary) are bounded in
count and in time, and a failing store is answered as a refusal, never a dead worker."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import plyvel
import pytest
import trio

from metrics import exporter
from primary import digest_collector
from tests.worker.attacks.support import (
    ATTACK_PARAMS,
    GUARD,
    closed_by_peer,
    connect,
    quorum_during,
    start_loaded,
    tcp,
    under_load,
)
from worker.store import BatchStore, Write

pytestmark = pytest.mark.slow
P = ATTACK_PARAMS
FLOOD = 3  # times each endpoint's cap


async def test_idle_connection_floods_are_bounded(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(exporter._Handler, "timeout", 1.0)
    monkeypatch.setattr(digest_collector, "HELLO_TIMEOUT", 1.0)
    with trio.fail_after(GUARD):
        async with under_load(tmp_path, start=3) as c:
            auth = await start_loaded(c, 3, metrics=True)
            target = auth.worker
            endpoints = {
                "intake": (target.addresses.transactions, P.max_client_connections),
                "worker": (target.info()["worker_to_worker"], P.max_handshaking_connections),
                "metrics": (target.info()["metrics"], P.max_metrics_connections),
                "primary": (
                    c.committee.authorities[auth.name].primary.worker_to_primary,
                    digest_collector.MAX_UNAUTHENTICATED,
                ),
            }
            flood = []
            for address, cap in endpoints.values():
                flood += [await connect(address) for _ in range(FLOOD * cap)]
            async with trio.open_nursery() as nursery:
                for stream in flood:
                    nursery.start_soon(closed_by_peer, stream)  # each one is closed
                await quorum_during(target, 10, f"{len(flood)} idle connections")
                assert target.intake.clients <= P.max_client_connections
                assert tcp(target)._inbound.handshaking.active <= P.max_handshaking_connections
            intake, worker = target.intake.rejections, tcp(target).rejections
            assert intake["too_many_connections"] > 0 and intake["idle_timeout"] > 0
            assert worker["too_many_connections"] > 0 and worker["bad_hello"] > 0
            assert target._metrics_server.refused > 0
            assert auth.collector.rejections["too_many_connections"] > 0
            print(f"intake {dict(intake)}; worker {dict(worker)}")


class FailingStore(BatchStore):
    """A store whose writes fail (as LevelDB does without descriptors) while `failing`."""

    failing = True

    def put_many(self, writes: Iterable[Write], delivered: Iterable = ()) -> None:
        writes = list(writes)
        if FailingStore.failing and writes:
            raise plyvel.IOError("IO error: Too many open files")
        super().put_many(writes, delivered)


async def test_a_failing_store_is_back_pressure(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with under_load(tmp_path, start=3) as c:
            c.store_factories[3] = FailingStore
            auth = await start_loaded(c, 3)
            sick = auth.worker
            await sick.wait_for(lambda: sick.processor.rejections["store_unavailable"] >= 20)
            await quorum_during(c.authorities[0].worker, 10, "a peer whose store fails")
            assert not sick.store_closed and sick.processor.persisted["peer"] == 0
            FailingStore.failing = False  # the disk recovers: so does the worker
            await sick.wait_for(lambda: sick.processor.persisted["peer"] > 0)
            await quorum_during(sick, 5, "the recovered worker")

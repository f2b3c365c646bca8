"""The gate in front of the libp2p listener (item 7): strangers after Noise, deadlines,
and slots freed when connections close, between real hosts on 127.0.0.1."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import trio

from tests.worker.transport.libp2p.support import (
    HANG_GUARD,
    cluster,
    counted,
    plan,
    raw_client,
    wait_connected,
)
from worker.transport.libp2p.gate import STRANGER_SLOTS
from worker.transport.libp2p.transport import Libp2pTransport
from worker.transport.testing.contract import round_trip

CHURN, CLIENTS = 260, 13  # connections over the worker's life (py-libp2p keeps 250)


async def test_strangers_beyond_their_slots_are_refused_right_after_noise(tmp_path: Path) -> None:
    """Unknown PeerIds that never handshake: at most STRANGER_SLOTS wait (each at most
    `accept_timeout`), the next is refused at once; committee peers are unaffected."""
    p = plan(2, tmp_path)
    build = lambda i: p.build(i, accept_timeout=1.0)  # noqa: E731
    done = trio.Event()

    async def stranger(k: int, task_status: trio.TaskStatus[None]) -> None:
        async with raw_client(tmp_path, f"s{k}") as client:
            with contextlib.suppress(Exception):  # the last one is closed at once
                await client.connect(p.addrs[0])
            task_status.started()
            await done.wait()

    async with cluster(p, build=build) as c, trio.open_nursery() as nursery:
        await wait_connected(c, [0, 1])
        server = c[0]
        assert isinstance(server, Libp2pTransport)
        with trio.fail_after(HANG_GUARD):
            for k in range(STRANGER_SLOTS + 1):
                await nursery.start(stranger, k)
            await counted(server, "stranger_limit")
            await counted(server, "accept_timeout", STRANGER_SLOTS)
        assert server.bounds()["gate_peak_pending"] <= STRANGER_SLOTS + 1
        await round_trip(c, 1, 0, request_id=1)
        done.set()


@pytest.mark.slow
async def test_slots_are_freed_when_connections_close(tmp_path: Path) -> None:
    """py-libp2p 0.8.1 keeps an inbound slot for every connection it ever upgraded: 250
    connections over a worker's life and no dial got in any more."""
    p = plan(2, tmp_path)

    async def churn(k: int) -> None:
        """CHURN // CLIENTS connections, one after the other. More strangers than the gate
        has slots may be at it at once (a closed one takes a moment to leave the gate):
        those are refused right after Noise, and that client tries again."""
        async with raw_client(tmp_path, f"c{k}") as client:
            made = 0
            while made < CHURN // CLIENTS:
                with contextlib.suppress(ConnectionRefusedError):
                    conn = await client.connect(p.addrs[0])
                    await conn.close()
                    made += 1

    async with cluster(p, running=[0]):
        with trio.fail_after(4 * HANG_GUARD):
            async with trio.open_nursery() as nursery:
                for k in range(CLIENTS):
                    nursery.start_soon(churn, k)
        async with raw_client(tmp_path, "late") as late:  # a new dial still gets in
            with trio.fail_after(HANG_GUARD):
                conn = await late.connect(p.addrs[0])
            assert not conn.is_closed

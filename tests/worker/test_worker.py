"""Workers over the in-memory transport: quorum, back-pressure, retries (and over TCP
where the socket is the point)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from tests.worker.harness import TEST_PARAMS, cluster, send_transactions, transactions
from worker.store import BatchStore


@pytest.mark.parametrize("memory", [True, False], ids=["memory", "tcp"])
async def test_all_batches_reach_quorum_and_collectors_agree(tmp_path: Path, memory: bool) -> None:
    async with cluster(tmp_path, memory=memory) as c:
        a = c.authorities[0]
        assert a.worker is not None and a.collector is not None
        await send_transactions(a.worker.addresses.transactions, transactions(1000, 100))
        await a.worker.wait_for(
            lambda: a.worker.batch_maker.transactions == 1000 and a.worker.idle()
        )
        records = a.worker.records
        assert sum(r.transactions for r in records) == 1000
        assert all(r.stake >= c.committee.quorum_threshold() for r in records)
        ours = {bytes.fromhex(r.digest) for r in records}
        await a.collector.wait_for(lambda: a.collector.digests.ours.get(0, set()) >= ours)
        for record in records:
            for peer in record.acked_by:
                auth = next(x for x in c.authorities if x.name == peer)
                assert auth.collector is not None
                await auth.collector.wait_for(
                    lambda auth=auth, r=record: (
                        bytes.fromhex(r.digest) in auth.collector.digests.others.get(0, set())
                    )
                )
        # samples travel with their batches: counters 0, 10, ..., 990
        assert sorted(s for r in records for s in r.samples) == list(range(0, 1000, 10))


async def test_one_authority_down_every_batch_reaches_quorum(tmp_path: Path) -> None:
    async with cluster(tmp_path, start=3) as c:
        workers = [c.authorities[i].worker for i in range(3)]
        for i, worker in enumerate(workers):
            assert worker is not None
            await send_transactions(worker.addresses.transactions, transactions(500, 100, i * 500))
        for worker in workers:
            await worker.wait_for(lambda worker=worker: worker.batch_maker.transactions == 500)
            await worker.wait_for(worker.idle)
            assert sum(r.transactions for r in worker.records) == 500
            assert all(c.authorities[3].name not in r.acked_by for r in worker.records)
            assert not worker.broadcaster.failures


async def test_two_down_nothing_reported_and_memory_bounded(tmp_path: Path) -> None:
    params = TEST_PARAMS
    async with cluster(tmp_path, start=2) as c:
        a = c.authorities[0]
        assert a.worker is not None and a.collector is not None
        worker = a.worker
        payload = transactions(100_000, 1000)  # 100 MB: far more than the pipeline holds
        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_transactions, worker.addresses.transactions, payload)
            await worker.wait_for(
                lambda: (
                    worker.broadcaster.quorum.awaiting_quorum == params.max_pending_batches
                    and worker.queue_depths()["sealed"] == 2
                )
            )
            # The intake stopped reading: what it took is bounded by the pipeline's capacity
            # (pending batches + the sealed queue + one in the broadcast task + the open one
            # + one socket read), not by what the client offered.
            bound = (params.max_pending_batches + 4) * params.batch_size + (1 << 18)
            assert worker.batch_maker.transactions * 1000 <= bound
            assert worker.broadcaster.quorum.tracked <= 2 * params.max_pending_batches
            assert len(worker.broadcaster.inflight) <= 2 * params.max_pending_batches + 1
            assert not worker.records
            assert not a.collector.digests.ours
            nursery.cancel_scope.cancel()


async def test_retry_until_late_peer_starts(tmp_path: Path) -> None:
    async with cluster(tmp_path, start=2) as c:
        a = c.authorities[0]
        assert a.worker is not None
        worker = a.worker
        await send_transactions(worker.addresses.transactions, transactions(200, 100))
        await worker.wait_for(lambda: worker.broadcaster.quorum.awaiting_quorum > 0)
        assert not worker.records
        late = await c.start(2)
        await worker.wait_for(lambda: worker.batch_maker.transactions == 200 and worker.idle())
        assert sum(r.transactions for r in worker.records) == 200
        assert any(late.name in r.acked_by for r in worker.records)


async def test_peer_batches_are_stored_after_quorum_too(tmp_path: Path) -> None:
    """Delivery goes on after quorum: every live peer ends up storing every batch."""
    async with cluster(tmp_path) as c:
        a = c.authorities[0]
        assert a.worker is not None
        await send_transactions(a.worker.addresses.transactions, transactions(300, 100))
        await a.worker.wait_for(
            lambda: a.worker.batch_maker.transactions == 300 and a.worker.idle()
        )
        digests = {bytes.fromhex(r.digest) for r in a.worker.records}
        assert sum(r.transactions for r in a.worker.records) == 300
        for peer in c.authorities[1:]:
            assert peer.worker is not None and peer.collector is not None
            col = peer.collector
            await col.wait_for(lambda col=col: digests <= col.digests.others.get(0, set()))
            store = peer.worker.store
            assert isinstance(store, BatchStore)
            assert all(d in store for d in digests)


@pytest.mark.parametrize("in_thread", [False, True], ids=["inline", "digest_in_thread"])
async def test_malformed_and_oversized_batches_are_rejected_not_stored(
    tmp_path: Path, in_thread: bool
) -> None:
    from worker.processor import DECODE_IN_THREAD
    from worker.transport.base import ResponseReceived, SendRequest
    from worker.transport.tcp import TcpTransport
    from worker.wire import messages as wire

    params = TEST_PARAMS.model_copy(update={"digest_in_thread": in_thread})
    async with cluster(tmp_path, params=params, start=1, memory=False) as c:
        target = c.authorities[0]
        assert target.worker is not None
        sender = c.authorities[1].name
        transport = TcpTransport(c.committee, sender, 0, TEST_PARAMS)
        bad = {
            1: b"\xc1garbage",
            2: wire.encode(wire.Ack(bytes(32))),  # a response where a request belongs
            3: wire.encode_batch([bytes(TEST_PARAMS.max_transaction_size + 1)]),
            # large ones too: checked in the thread when `digest_in_thread` is on
            5: b"\xc1" + bytes(DECODE_IN_THREAD),
        }
        good = wire.encode_batch([b"\x01" + bytes(50)])
        large = wire.encode_batch([b"\x01" + bytes(999)] * (DECODE_IN_THREAD // 1000 + 1))
        async with trio.open_nursery() as nursery:
            await nursery.start(transport.serve)
            for rid, data in bad.items():
                transport.send(SendRequest(rid, target.name, data))
            transport.send(SendRequest(4, target.name, good))
            transport.send(SendRequest(6, target.name, large))
            answers = {}
            with trio.fail_after(30):
                while len(answers) < 6:
                    event = await transport.events.receive()
                    assert isinstance(event, ResponseReceived)
                    answers[event.request_id] = wire.decode(event.data, 4096)
            nursery.cancel_scope.cancel()
        assert answers[1] == wire.Reject("malformed")
        assert answers[2] == wire.Reject("unexpected_message")
        assert answers[3] == wire.Reject("bad_field")
        assert answers[4] == wire.Ack(wire.digest(good))
        assert answers[5] == wire.Reject("malformed")
        assert answers[6] == wire.Ack(wire.digest(large))
        store = target.worker.store
        assert store is not None
        assert sorted(store.digests()) == sorted([wire.digest(good), wire.digest(large)])
        assert target.worker.processor is not None
        assert target.worker.processor.rejections == {
            "malformed": 2,
            "unexpected_message": 1,
            "bad_field": 1,
        }

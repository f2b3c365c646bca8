"""Each fault action's effect on running workers (in-memory transport, LevelDB)."""

from __future__ import annotations

from pathlib import Path

from tests.worker.harness import cluster, send_transactions, transactions
from worker.core.faults import Byzantine, FaultSettings, LinkFault
from worker.wire import messages as wire
from worker.worker import Worker


async def _load(worker: Worker, count: int = 300, first: int = 0) -> None:
    await send_transactions(worker.addresses.transactions, transactions(count, 100, first))
    await worker.wait_for(
        lambda: worker.batch_maker.transactions >= first + count and worker.idle()
    )


def _stored(worker: Worker) -> set[bytes]:
    assert worker.store is not None
    return set(worker.store.digests())


def _workers(c) -> list[Worker]:  # type: ignore[no-untyped-def]
    workers = [a.worker for a in c.authorities]
    assert all(n is not None for n in workers)
    return workers  # type: ignore[return-value]


async def test_partitioned_link_carries_nothing(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        n0, n1, _, _ = _workers(c)
        n0.set_faults(FaultSettings(blocked=frozenset({n1.name})))
        n1.set_faults(FaultSettings(blocked=frozenset({n0.name})))
        await _load(n0)
        await n0.wait_for(
            lambda: n0.broadcaster.quorum.tracked == 0
        )  # post-quorum delivery gave up
        assert n0.records and all(n1.name not in r.acked_by for r in n0.records)
        assert not ({bytes.fromhex(r.digest) for r in n0.records} & _stored(n1))
        assert n0.transport.dropped["outbound"] > 0
        assert n1.processor is not None and n1.processor.persisted["peer"] == 0


async def test_silent_worker_never_acks(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        n0, n1, _, _ = _workers(c)
        n1.set_faults(FaultSettings(byzantine=Byzantine(silent=True)))
        await _load(n0)
        assert sum(r.transactions for r in n0.records) == 300
        assert all(n1.name not in r.acked_by for r in n0.records)
        assert not _stored(n1)


async def test_forged_acks_count_but_store_nothing(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        n0, n1, n2, n3 = _workers(c)
        n1.set_faults(FaultSettings(byzantine=Byzantine(forged_ack=True)))
        await _load(n0)
        assert any(n1.name in r.acked_by for r in n0.records)
        assert not _stored(n1)
        for r in n0.records:  # with <= f forgers, every quorum batch is at >= f+1 honest
            honest = [n for n in (n0, n2, n3) if bytes.fromhex(r.digest) in _stored(n)]
            assert len(honest) >= 2


async def test_wrong_digest_acks_are_rejections(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        n0, n1, _, _ = _workers(c)
        n1.set_faults(FaultSettings(byzantine=Byzantine(corrupt="wrong_digest")))
        await _load(n0)
        assert n0.records and all(n1.name not in r.acked_by for r in n0.records)


async def test_delayed_links_delay_quorum(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        n0 = _workers(c)[0]
        n0.set_faults(FaultSettings(links={"*": LinkFault(delay=0.3)}))
        await _load(n0, 100)
        assert n0.records
        assert all(r.quorum_at - r.sealed_at >= 0.3 for r in n0.records)


async def test_malformed_sender_gets_no_quorum(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        n0, n1, n2, n3 = _workers(c)
        n0.set_faults(FaultSettings(byzantine=Byzantine(corrupt="malformed")))
        await send_transactions(n0.addresses.transactions, transactions(100, 100))
        await n0.wait_for(lambda: n0.broadcaster.failures.get("anti_quorum", 0) > 0)
        assert not n0.records
        for peer in (n1, n2, n3):
            assert peer.processor is not None
            await peer.wait_for(lambda p=peer: p.processor.rejections["malformed"] > 0)
            assert not _stored(peer)


async def test_equivocation_stores_different_batches_at_different_peers(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        workers = _workers(c)
        n0 = workers[0]
        n0.set_faults(FaultSettings(byzantine=Byzantine(equivocate=True)))
        await _load(n0, 100)
        await n0.wait_for(lambda: n0.broadcaster.quorum.tracked == 0)
        own = {bytes.fromhex(r.digest) for r in n0.records}
        stores = {n.name: _stored(n) for n in workers[1:]}
        first, second = n0.peers[: len(n0.peers) // 2], n0.peers[len(n0.peers) // 2 :]
        assert all(stores[p] and stores[p] <= own for p in first)
        assert all(stores[p] and not (stores[p] & own) for p in second)
        for n in workers[1:]:  # what each honest worker stored hashes to its key
            assert n.store is not None
            assert all(wire.digest(n.store.get(d) or b"") == d for d in stores[n.name])


async def test_flooding_is_rejected_and_honest_traffic_flows(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        n0, n1, _, _ = _workers(c)
        n1.set_faults(FaultSettings(byzantine=Byzantine(flood=200)))
        assert n0.processor is not None
        await n0.wait_for(lambda: n0.processor.rejections["malformed"] >= 20)
        await _load(n0)
        assert sum(r.transactions for r in n0.records) == 300
        flooding = n1.metrics.faults_active.labels(**n1.metrics.base, kind="flooding")
        assert flooding._value.get() == 1
        n1.set_faults(FaultSettings())
        assert flooding._value.get() == 0


async def test_replayed_batches_are_stored_once(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        n0, n1, _, _ = _workers(c)
        await _load(n0, 200)
        # n0 is idle once each batch has its quorum; n1's copy may still be on its way
        own = {bytes.fromhex(r.digest) for r in n0.records}
        await n1.wait_for(lambda: own <= _stored(n1))
        before = _stored(n1)
        assert n1.processor is not None
        persisted = n1.processor.persisted["peer"]
        n0.set_faults(FaultSettings(byzantine=Byzantine(replay=True)))
        await n1.wait_for(lambda: n1.processor.persisted["peer"] >= persisted + 5)
        n0.set_faults(FaultSettings())
        assert _stored(n1) == before


async def test_faults_active_gauge_follows_settings(tmp_path: Path) -> None:
    async with cluster(tmp_path, start=1) as c:
        n0 = c.authorities[0].worker
        assert n0 is not None
        gauge = n0.metrics.faults_active
        n0.set_faults(FaultSettings(blocked=frozenset({"x"}), byzantine=Byzantine(silent=True)))
        assert gauge.labels(**n0.metrics.base, kind="partition")._value.get() == 1
        assert gauge.labels(**n0.metrics.base, kind="silent")._value.get() == 1
        assert gauge.labels(**n0.metrics.base, kind="delay")._value.get() == 0
        n0.set_faults(FaultSettings())
        assert gauge.labels(**n0.metrics.base, kind="partition")._value.get() == 0

"""The Worker facade a driver uses (the contract API), over the in-memory transport."""

from __future__ import annotations

from pathlib import Path

from tests.worker.harness import cluster, send_transactions, transactions
from worker.core.faults import FaultSettings
from worker.transport.factory import libp2p_key_dir


async def test_progress_flush_and_evidence(tmp_path: Path) -> None:
    async with cluster(tmp_path) as c:
        a = c.authorities[0]
        w = a.worker
        assert w is not None and a.collector is not None and a.info is not None
        assert {"authority", "worker_id", "transactions", "metrics", "worker_to_worker"} <= set(
            a.info
        )
        assert a.info["peer_id"] is None and w.peer_id is None  # no PeerIds in memory
        w.add_peer_addrs({p.name: "anywhere" for p in c.authorities})  # nothing to learn
        assert await w.wait_discovery({p.name for p in c.authorities}) == {}
        await send_transactions(w.addresses.transactions, transactions(500, 100))
        await w.wait_for(lambda: w.progress()["transactions_received"] == 500 and w.idle())
        await w.wait_idle()
        sent = await w.flush_reports(timeout=30)
        progress = w.progress()
        assert progress["batches_quorum"] == len(w.records) > 0
        assert progress["persisted"] == w.stored_count() >= len(w.records)
        assert progress["reports_sent"] == sent >= len(w.records)
        assert progress["reports_queued"] == 0
        await a.collector.wait_for(lambda: a.collector.reports >= sent)
        evidence = w.evidence()
        assert (evidence["authority"], evidence["worker_id"]) == (w.name, 0)
        assert len(evidence["records"]) == len(w.records)
        assert all(evidence["stored"].values())  # every stored batch hashes to its key
        assert {r["digest"] for r in evidence["records"]} <= set(evidence["sent"])
        assert w.stats()["batches_quorum"] == len(w.records)
        w.set_faults(FaultSettings())
        assert not w.store_closed
        c.stop(0)
        await w.wait_for(lambda: w.store_closed)
    assert w.store_closed


def test_libp2p_keys_live_beside_the_store(tmp_path: Path) -> None:
    assert libp2p_key_dir(tmp_path / "store" / "w-0") == tmp_path / "store" / "w-0.libp2p"

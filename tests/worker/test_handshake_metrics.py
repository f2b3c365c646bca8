"""`peer_handshakes` counts the introductions a worker's transport accepted."""

from __future__ import annotations

from pathlib import Path

from tests.worker.harness import cluster, send_transactions, transactions


async def test_peer_handshakes_count_accepted_introductions(tmp_path: Path) -> None:
    async with cluster(tmp_path, memory=False) as c:
        sender, receiver = c.authorities[0].worker, c.authorities[1].worker
        assert sender is not None and receiver is not None
        await send_transactions(sender.addresses.transactions, transactions(100, 100))
        await sender.wait_for(lambda: sender.progress()["batches_quorum"] > 0)
        labels = {**receiver.metrics.base, "result": "accepted"}
        value = receiver.metrics.registry.get_sample_value("peer_handshakes_total", labels)
        assert value == 1  # the sender's Hello, on the one link it dialed

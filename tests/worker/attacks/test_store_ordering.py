"""Issue 12 items 12 and 18: an ack means "stored and (durably) to be reported".

Item 18: a store that blocks until released is injected into a worker; no ack may leave
it meanwhile, while it keeps answering on the same connection. Item 12: batches stored
while the primary is down are reported after a restart (the pending reports are in the
store, written with the batches)."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

import pytest
import trio

from tests.worker.attacks.support import (
    GUARD,
    connect,
    hello_frame,
    quorum_during,
    request_frame,
    start_loaded,
    under_load,
)
from worker.store import BatchStore, Write
from worker.streams import read_frame
from worker.wire import messages as wire
from worker.wire.frames import Frame, FrameBuffer
from worker.wire.reports import ReportKind

pytestmark = pytest.mark.slow


class BlockingStore(BatchStore):
    """Every write that holds a peer's batch waits until `release` is set."""

    entered = threading.Event()
    release = threading.Event()

    def put_many(self, writes: Iterable[Write], delivered: Iterable = ()) -> None:
        writes = list(writes)
        if any(report == 1 for _, _, report in writes):  # OthersBatch: a peer's batch
            BlockingStore.entered.set()
            BlockingStore.release.wait()
        super().put_many(writes, delivered)


async def _release_at_exit() -> None:
    try:
        await trio.sleep_forever()
    finally:  # a failing test must not leave a thread blocked in the store
        BlockingStore.release.set()


async def test_no_ack_leaves_before_the_store_returns(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with under_load(tmp_path, start=3) as c:
            c.store_factories[3] = BlockingStore
            auth = await start_loaded(c, 3)
            blocked = auth.worker
            stream = await connect(blocked.info()["worker_to_worker"])
            c.nursery.start_soon(_release_at_exit)
            batches = [wire.encode_batch([bytes([1, i]) + bytes(98)] * 10) for i in range(3)]
            await stream.send_all(hello_frame(c.authorities[0].name) + request_frame(1, batches[0]))
            await trio.to_thread.run_sync(BlockingStore.entered.wait)
            # While that write is in flight, two more batches queue for the next (group) write,
            # and the worker still answers on this very connection: a refusal comes back ...
            await stream.send_all(
                request_frame(2, batches[1])
                + request_frame(3, batches[2])
                + request_frame(4, b"\x00")
            )
            buffer = FrameBuffer(1 << 20, tagged=True)
            first = await read_frame(stream, buffer)
            assert isinstance(first, Frame)
            assert (first.request_id, wire.decode(first.payload, 4096)) == (
                4,
                wire.Reject("malformed"),
            )
            # ... and the others reach quorum, but no ack of a peer batch left the worker.
            await quorum_during(c.authorities[0].worker, 10, "a peer whose store blocks")
            assert blocked.processor.persisted["peer"] == 0
            writer = blocked.processor.store
            assert writer.queued >= 2  # ours, and the other peers' batches since
            BlockingStore.release.set()
            acked = {}
            while len(acked) < 3:
                frame = await read_frame(stream, buffer)
                assert isinstance(frame, Frame)
                acked[frame.request_id] = wire.decode(frame.payload, 4096)
            for request_id, batch in enumerate(batches, start=1):
                assert acked[request_id] == wire.Ack(wire.digest(batch))
                assert blocked.store.get(wire.digest(batch)) == batch
            assert writer.commits < writer.writes  # what queued went in shared writes


async def test_reports_survive_a_crash_before_delivery(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with under_load(tmp_path, start=3) as c:
            auth = await start_loaded(c, 3, collector=False)  # its primary is down
            worker = auth.worker
            persisted = worker.processor.persisted
            await worker.wait_for(lambda: persisted["peer"] >= 20 and persisted["own"] >= 1)
            assert worker.connector.sent == 0
            c.stop(3)  # the in-memory queue of reports is lost, the store is not
            await worker.wait_for(lambda: worker.store_closed)  # its last step notifies
            store = BatchStore(tmp_path / "a3", sync=False)
            try:
                stored = set(store.digests())
                pending = set(store.pending_reports())
                assert {d for _, d in pending} == stored
            finally:
                store.close()
            # Its own quorum batches are reported as OurBatch, peers' as OthersBatch (the
            # same digest may be both: every client sends the same transactions).
            assert {k for k, _ in pending} == {ReportKind.OUR_BATCH, ReportKind.OTHERS_BATCH}
            auth = await c.start(3)  # restarted, with its primary
            collector, worker = auth.collector, auth.worker

            def collected(kind: int, digest: bytes) -> bool:
                digests = collector.digests
                by_kind = digests.ours if kind == ReportKind.OUR_BATCH else digests.others
                return digest in by_kind.get(0, set())

            await collector.wait_for(lambda: all(collected(*r) for r in pending))
            assert worker.processor.replayed == len(pending)
            # Confirmed, the replayed reports are forgotten. Not "no report pending": the
            # peers' load keeps storing batches (each with its report) at this worker; those
            # writes also carry the deletions and notify once they returned.
            await worker.wait_for(lambda: not pending & set(worker.store.pending_reports()))
            print(f"{len(pending)} reports of {len(stored)} batches stored while it was down")

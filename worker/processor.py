"""Processor: hash, persist, report to the primary, then answer.

A peer's batch is decoded strictly (element limits from the parameters; a large one
off the event loop, so acks and timers go on meanwhile), stored under its digest
together with its pending `OthersBatch` report (one write: worker/store.py; batches
that arrive together share one synced write, worker/store_writer.py), and only
then acked: an ack means "on disk, and reported or to be reported after a restart".
A store that fails (disk full, no descriptors) is answered `Reject("store_unavailable")`
(back-pressure) and never ends the worker; an own batch is retried until it is stored.
Pending reports left by an earlier run are replayed first. Our own batches
arrive from the broadcaster once they reached quorum; they are stored, reported as
`OurBatch` and recorded. (A worker configured as Byzantine answers otherwise: the
decision is `answer_for` in worker/core/faults.py.) Peer requests are handled by a
pool of MAX_CONCURRENT_REQUESTS tasks on the dispatch's channel, so a slow ack (a
Byzantine delay) holds up no other request, and a request wakes an idle handler
directly.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import trio

from metrics.worker_metrics import WorkerMetrics
from worker.broadcaster import Backlog, OwnBatch
from worker.changes import Changes
from worker.core.faults import Byzantine, answer_for
from worker.core.records import QuorumRecord, Records
from worker.store_writer import StoreUnavailable, StoreWriter
from worker.transport.base import RequestReceived
from worker.wire import messages as wire
from worker.wire.reports import Report, ReportKind

log = logging.getLogger(__name__)

MAX_CONCURRENT_REQUESTS = 64
#: With `digest_in_thread`, payloads above this size are checked and hashed in a thread.
#: Off by default: where the workers of a run share the machine's cores (one box) the
#: thread buys no parallelism, and its GIL hand-overs with the event loop's socket and
#: AEAD calls cost more than the hashing it moves (docs/architecture.md, "Threads").
DECODE_IN_THREAD = 64 * 1024
#: Retry delays (s) while the store refuses one of our own quorum batches.
STORE_RETRY = (0.05, 2.0)


class Processor:
    def __init__(
        self,
        store: StoreWriter,
        worker_id: int,
        max_message_size: int,
        max_transaction_size: int,
        from_dispatch: trio.MemoryReceiveChannel[RequestReceived],
        from_broadcaster: trio.MemoryReceiveChannel[tuple[OwnBatch, QuorumRecord]],
        to_primary: trio.MemorySendChannel[Report],
        metrics: WorkerMetrics,
        behaviour: Callable[[], Byzantine],
        changes: Changes,
        backlog: Backlog,
        records: Records,
        *,
        max_transactions: int | None = None,
        min_transaction_size: int = 1,
        digest_in_thread: bool = False,
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self._max_message = max_message_size
        self._max_tx = max_transaction_size
        self._max_txs = max_transactions
        self._min_tx = min_transaction_size
        self._in_thread = DECODE_IN_THREAD if digest_in_thread else None
        self._from_dispatch = from_dispatch
        self._from_broadcaster = from_broadcaster
        self._to_primary = to_primary
        self._metrics = metrics
        self._behaviour = behaviour
        self._changes = changes  # lets the worker's waiters re-check their conditions
        self._backlog = backlog
        self.records = records
        self.rejections: Counter[str] = Counter()
        self.persisted: Counter[str] = Counter()  # by origin: "own" / "peer"
        self.reported = 0
        self.replayed = 0  # pending reports of an earlier run, re-sent at start-up

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.store.run)
            await self._replay_pending_reports()
            nursery.start_soon(self._own_batches)
            # A pool of handlers on the dispatch's channel: a request wakes an idle one
            # directly (no task to spawn, no limiter to pass).
            for _ in range(MAX_CONCURRENT_REQUESTS):
                nursery.start_soon(self._handle_requests)

    async def _handle_requests(self) -> None:
        async for event in self._from_dispatch:
            await self.handle_request(event)

    async def _replay_pending_reports(self) -> None:
        """Reports of batches stored by an earlier run but never confirmed by the primary."""
        pending = await trio.to_thread.run_sync(self.store.store.pending_reports)
        for kind, digest in pending:
            await self._report(ReportKind(kind), digest)
        self.replayed = len(pending)

    async def _own_batches(self) -> None:
        async for batch, record in self._from_broadcaster:
            delay = STORE_RETRY[0]
            while True:
                try:
                    await self._persist(batch.digest, batch.data, "own", ReportKind.OUR_BATCH)
                    break
                except StoreUnavailable:
                    await trio.sleep(delay)  # back-pressure: the backlog stops submissions
                    delay = min(delay * 2, STORE_RETRY[1])
            await self._report(ReportKind.OUR_BATCH, batch.digest)
            self.records.keep(record)
            self._backlog.count -= 1
            self._changes.notify()

    def _check(self, data: bytes) -> bytes:
        """The digest of a well-formed batch; WireError otherwise."""
        limits = (self._max_message, self._max_tx, self._max_txs, self._min_tx)
        if not wire.is_uniform_batch(data, *limits):  # else decoded: its error says why
            msg = wire.decode(data, *limits)
            if not isinstance(msg, wire.Batch):
                raise wire.WireError("unexpected_message", type(msg).__name__)
        return wire.digest(data)

    async def handle_request(self, event: RequestReceived) -> None:
        try:
            if self._in_thread is not None and len(event.data) > self._in_thread:
                digest = await trio.to_thread.run_sync(self._check, event.data)
            else:
                digest = self._check(event.data)
        except wire.WireError as exc:
            return await self._refuse(event, exc.reason)
        answer = answer_for(self._behaviour(), digest)
        if answer is None:
            return
        if answer.store:
            try:
                await self._persist(digest, event.data, "peer", ReportKind.OTHERS_BATCH)
            except StoreUnavailable:
                return await self._refuse(event, "store_unavailable")
            await self._report(ReportKind.OTHERS_BATCH, digest)
        if answer.delay:
            await trio.sleep(answer.delay)
        await event.respond(wire.encode(wire.Ack(answer.digest)))

    async def _refuse(self, event: RequestReceived, reason: str) -> None:
        self.rejections[reason] += 1
        self._changes.notify()
        await event.respond(wire.encode(wire.Reject(reason)))

    async def _persist(self, digest: bytes, data: bytes, origin: str, report: ReportKind) -> None:
        """Batch and pending report in one write; StoreUnavailable if the store refused."""
        try:
            await self.store.put(digest, data, int(report))
        except StoreUnavailable as exc:
            log.warning("store refused a write: %s", exc)
            self.rejections["store_unavailable"] += 1
            self._changes.notify()
            raise
        self.persisted[origin] += 1
        self._changes.notify()
        m = self._metrics
        m.child(m.persisted, origin=origin).inc()

    async def _report(self, kind: ReportKind, digest: bytes) -> None:
        report = Report(kind, digest, self.worker_id)
        try:  # no scheduling round trip when there is room
            self._to_primary.send_nowait(report)
        except trio.WouldBlock:
            await self._to_primary.send(report)
        self.reported += 1
        m = self._metrics
        m.child(m.reported, kind=kind.name.lower()).inc()

"""Processor: hash, persist, report to the primary, then answer.

A peer's batch is decoded strictly (element limits from the parameters; a large one
off the event loop, so acks and timers go on meanwhile), stored under its digest
together with its pending `OthersBatch` report (one write: worker/store.py), and only
then acked: an ack means "on disk, and reported or to be reported after a restart".
A store that fails (disk full, no descriptors) is answered `Reject("store_unavailable")`
(back-pressure) and never ends the worker; an own batch is retried until it is stored.
Pending reports left by an earlier run are replayed first. Our own batches
arrive from the broadcaster once they reached quorum; they are stored, reported as
`OurBatch` and recorded. (A worker configured as Byzantine answers otherwise: the
decision is `answer_for` in worker/core/faults.py.) Peer requests are handled one task
each, at most MAX_CONCURRENT_REQUESTS at a time, so a slow store or a slow ack holds
up no other.
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
from worker.store import STORE_ERRORS, BatchStore
from worker.transport.base import RequestReceived
from worker.wire import messages as wire
from worker.wire.reports import Report, ReportKind

log = logging.getLogger(__name__)

MAX_CONCURRENT_REQUESTS = 64
#: Payloads above this size are decoded and hashed in a thread (not on the event loop).
DECODE_IN_THREAD = 64 * 1024
#: Retry delays (s) while the store refuses one of our own quorum batches.
STORE_RETRY = (0.05, 2.0)


class StoreUnavailable(Exception):
    """The store refused a write (counted as `store_unavailable`)."""


class Processor:
    def __init__(
        self,
        store: BatchStore,
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
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self._max_message = max_message_size
        self._max_tx = max_transaction_size
        self._max_txs = max_transactions
        self._min_tx = min_transaction_size
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
        await self._replay_pending_reports()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._own_batches)
            limiter = trio.CapacityLimiter(MAX_CONCURRENT_REQUESTS)
            async for event in self._from_dispatch:
                await limiter.acquire_on_behalf_of(event)
                nursery.start_soon(self._one_request, event, limiter)

    async def _one_request(self, event: RequestReceived, limiter: trio.CapacityLimiter) -> None:
        try:
            await self.handle_request(event)
        finally:
            limiter.release_on_behalf_of(event)

    async def _replay_pending_reports(self) -> None:
        """Reports of batches stored by an earlier run but never confirmed by the primary."""
        pending = await trio.to_thread.run_sync(self.store.pending_reports)
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
        msg = wire.decode(data, self._max_message, self._max_tx, self._max_txs, self._min_tx)
        if not isinstance(msg, wire.Batch):
            raise wire.WireError("unexpected_message", type(msg).__name__)
        return wire.digest(data)

    async def handle_request(self, event: RequestReceived) -> None:
        try:
            if len(event.data) > DECODE_IN_THREAD:
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
            await trio.to_thread.run_sync(self.store.put, digest, data, int(report))
        except STORE_ERRORS as exc:
            log.warning("store refused a write: %s", exc)
            self.rejections["store_unavailable"] += 1
            self._changes.notify()
            raise StoreUnavailable from exc
        self.persisted[origin] += 1
        self._changes.notify()
        m = self._metrics
        m.child(m.persisted, origin=origin).inc()

    async def _report(self, kind: ReportKind, digest: bytes) -> None:
        await self._to_primary.send(Report(kind, digest, self.worker_id))
        self.reported += 1
        m = self._metrics
        m.child(m.reported, kind=kind.name.lower()).inc()

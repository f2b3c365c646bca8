"""Processor: hash, persist, report to the primary, then answer.

A peer's batch is decoded strictly, stored under its digest and reported as
`OthersBatch` before the ack goes out, so an ack means "persisted". Our own batches
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
from worker.store import BatchStore
from worker.transport.base import RequestReceived
from worker.wire import messages as wire
from worker.wire.reports import Report, ReportKind

log = logging.getLogger(__name__)

MAX_CONCURRENT_REQUESTS = 64


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
    ) -> None:
        self.store = store
        self.worker_id = worker_id
        self._max_message = max_message_size
        self._max_tx = max_transaction_size
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

    async def run(self) -> None:
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

    async def _own_batches(self) -> None:
        async for batch, record in self._from_broadcaster:
            await self._persist(batch.digest, batch.data, "own")
            await self._report(ReportKind.OUR_BATCH, batch.digest)
            self.records.keep(record)
            self._backlog.count -= 1
            self._changes.notify()

    async def handle_request(self, event: RequestReceived) -> None:
        try:
            msg = wire.decode(event.data, self._max_message, self._max_tx)
        except wire.WireError as exc:
            return await self._refuse(event, exc.reason)
        if not isinstance(msg, wire.Batch):
            return await self._refuse(event, "unexpected_message")
        digest = wire.digest(event.data)
        answer = answer_for(self._behaviour(), digest)
        if answer is None:
            return
        if answer.store:
            await self._persist(digest, event.data, "peer")
            await self._report(ReportKind.OTHERS_BATCH, digest)
        if answer.delay:
            await trio.sleep(answer.delay)
        await event.respond(wire.encode(wire.Ack(answer.digest)))

    async def _refuse(self, event: RequestReceived, reason: str) -> None:
        self.rejections[reason] += 1
        self._changes.notify()
        await event.respond(wire.encode(wire.Reject(reason)))

    async def _persist(self, digest: bytes, data: bytes, origin: str) -> None:
        await trio.to_thread.run_sync(self.store.put, digest, data)
        self.persisted[origin] += 1
        self._changes.notify()
        m = self._metrics
        m.child(m.persisted, origin=origin).inc()

    async def _report(self, kind: ReportKind, digest: bytes) -> None:
        await self._to_primary.send(Report(kind, digest, self.worker_id))
        self.reported += 1
        m = self._metrics
        m.child(m.reported, kind=kind.name.lower()).inc()

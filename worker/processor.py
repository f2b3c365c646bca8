"""Processor: hash, persist, report to the primary — then answer.

(A worker configured as Byzantine answers otherwise: see worker/faults.py.)

A peer's batch is decoded strictly, stored under its digest and reported as
`OthersBatch` before the ack goes out, so an ack means "persisted". Our own batches
arrive here once they reached quorum and are reported as `OurBatch`.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable

import trio

from metrics.worker_metrics import WorkerMetrics
from worker.core.faults import Byzantine
from worker.primary_connector import PrimaryReporter, Report, ReportKind
from worker.store import BatchStore
from worker.transport.base import RequestReceived
from worker.wire import messages as wire

log = logging.getLogger(__name__)


class Processor:
    def __init__(
        self,
        store: BatchStore,
        reporter: PrimaryReporter,
        worker_id: int,
        max_message_size: int,
        max_transaction_size: int,
        metrics: WorkerMetrics | None = None,
        behaviour: Callable[[], Byzantine] = Byzantine,
        on_change: Callable[[], None] = lambda: None,
    ) -> None:
        self.store = store
        self.reporter = reporter
        self.worker_id = worker_id
        self._max_message = max_message_size
        self._max_tx = max_transaction_size
        self.rejections: Counter[str] = Counter()
        self.persisted: Counter[str] = Counter()  # by origin: "own" / "peer"
        self._metrics = metrics
        self._behaviour = behaviour
        self._on_change = on_change  # lets the node's waiters re-check their conditions

    async def _persist(self, digest: bytes, data: bytes, origin: str) -> None:
        await trio.to_thread.run_sync(self.store.put, digest, data)
        self.persisted[origin] += 1
        self._on_change()
        if self._metrics is not None:
            m = self._metrics
            m.child(m.persisted, origin=origin).inc()

    async def _report(self, kind: ReportKind, digest: bytes) -> None:
        await self.reporter.report(Report(kind, digest, self.worker_id))
        if self._metrics is not None:
            m = self._metrics
            m.child(m.reported, kind=kind.name.lower()).inc()

    async def handle_request(self, event: RequestReceived) -> None:
        try:
            msg = wire.decode(event.data, self._max_message, self._max_tx)
        except wire.WireError as exc:
            self.rejections[exc.reason] += 1
            self._on_change()
            await event.respond(wire.encode(wire.Reject(exc.reason)))
            return
        if not isinstance(msg, wire.Batch):
            self.rejections["unexpected_message"] += 1
            self._on_change()
            await event.respond(wire.encode(wire.Reject("unexpected_message")))
            return
        byz = self._behaviour()
        if byz.silent:
            return
        digest = wire.digest(event.data)
        if not byz.forged_ack:
            await self._persist(digest, event.data, "peer")
            await self._report(ReportKind.OTHERS_BATCH, digest)
        if byz.corrupt == "wrong_digest":
            digest = bytes(b ^ 0xFF for b in digest)
        if byz.slow_ack:
            await trio.sleep(byz.slow_ack)
        await event.respond(wire.encode(wire.Ack(digest)))

    async def handle_own(self, digest: bytes, data: bytes) -> None:
        await self._persist(digest, data, "own")
        await self._report(ReportKind.OUR_BATCH, digest)

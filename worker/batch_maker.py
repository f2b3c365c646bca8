"""Batch maker task: transactions from the intake into sealed batches for the broadcaster.

Drives the BatchMaker core (worker/core/batch_maker.py) with the intake's runs of
transactions (one list per socket read) and the trio clock; seals on size as runs arrive
and on `max_batch_delay` by timer. The channel to the broadcaster is small and bounded,
so a busy broadcaster backs up to the intake. Metrics move once per read, not per
transaction.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from metrics.worker_metrics import WorkerMetrics
from worker.core.batch_maker import BatchMaker, SealedBatch
from worker.wire.transactions import TxRun


class BatchMakerTask:
    def __init__(
        self,
        batch_size: int,
        max_batch_delay: float,
        from_intake: trio.MemoryReceiveChannel[list[TxRun]],
        to_broadcaster: trio.MemorySendChannel[SealedBatch],
        metrics: WorkerMetrics,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self._clock = clock
        self.core = BatchMaker(batch_size, max_batch_delay, clock())
        self._from_intake = from_intake
        self._to_broadcaster = to_broadcaster
        self._metrics = metrics
        self._rearmed = trio.Event()
        self.transactions = 0
        #: sealed here and not yet taken by the broadcaster (it calls `taken()`)
        self.unsubmitted = 0

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._timer)
            async for runs in self._from_intake:
                await self._add(runs)

    def taken(self) -> None:
        self.unsubmitted -= 1

    async def _add(self, runs: list[TxRun]) -> None:
        """Add what one read off a client connection held; blocks while the pipeline is full."""
        now = self._clock()
        opened = not self.core.pending_count
        ready: list[SealedBatch] = []
        count = size = 0
        for run in runs:
            ready += self.core.add_run(run, now)
            count += run.count
            size += run.size
        self.transactions += count
        self._metrics.transactions.inc(count)
        self._metrics.transaction_bytes.inc(size)
        if ready or opened:
            self._rearmed.set()  # the timer's deadline moved, or it has one again
        self.unsubmitted += len(ready)
        for batch in ready:
            await self._to_broadcaster.send(batch)

    async def _timer(self) -> None:
        """Seal on `max_batch_delay`; the deadline moves after every seal. Sleeps for good
        while no batch is open (no wake-up every `max_batch_delay` when idle)."""
        while True:
            self._rearmed = trio.Event()
            delay = self.core.wake_at() - self._clock()
            with trio.move_on_after(max(delay, 0.0) if math.isfinite(delay) else math.inf):
                await self._rearmed.wait()
                continue
            sealed = self.core.on_timer(self._clock())
            if sealed is not None:
                self.unsubmitted += 1
                await self._to_broadcaster.send(sealed)

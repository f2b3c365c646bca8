"""Batch maker task: transactions from the intake into sealed batches for the broadcaster.

Drives the BatchMaker core (worker/core/batch_maker.py) with chunks and the trio clock;
seals on size as transactions arrive and on `max_batch_delay` by timer. The channel to
the broadcaster is small and bounded, so a busy broadcaster backs up to the intake.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from metrics.worker_metrics import WorkerMetrics
from worker.core.batch_maker import BatchMaker, SealedBatch, parse_sample


class BatchMakerTask:
    def __init__(
        self,
        batch_size: int,
        max_batch_delay: float,
        from_intake: trio.MemoryReceiveChannel[list[bytes]],
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
            async for txs in self._from_intake:
                await self._add(txs)

    def taken(self) -> None:
        self.unsubmitted -= 1

    async def _add(self, txs: list[bytes]) -> None:
        """Add one chunk read off a client connection; blocks while the pipeline is full."""
        now = self._clock()
        ready: list[SealedBatch] = []
        add = self.core.add
        for tx in txs:
            sealed = add(tx, now, parse_sample(tx) if tx[:1] == b"\x00" else None)
            if sealed is not None:
                ready.append(sealed)
        self.transactions += len(txs)
        self._metrics.transactions.inc(len(txs))
        self._metrics.transaction_bytes.inc(sum(map(len, txs)))
        if ready:
            self._rearmed.set()
        self.unsubmitted += len(ready)
        for batch in ready:
            await self._to_broadcaster.send(batch)

    async def _timer(self) -> None:
        """Seal on `max_batch_delay`; the deadline moves after every seal."""
        while True:
            self._rearmed = trio.Event()
            delay = self.core.deadline - self._clock()
            with trio.move_on_after(max(delay, 0.0) if math.isfinite(delay) else math.inf):
                await self._rearmed.wait()
                continue
            sealed = self.core.on_timer(self._clock())
            if sealed is not None:
                self.unsubmitted += 1
                await self._to_broadcaster.send(sealed)

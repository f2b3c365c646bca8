"""Trio shell around the BatchMaker core: feeds it transactions and the timer, and
hands sealed batches on through a small bounded channel (back-pressure to intake)."""

from __future__ import annotations

import math
from collections.abc import Callable

import trio

from worker.core.batch_maker import BatchMaker, SealedBatch, parse_sample


class BatchMakerTask:
    def __init__(
        self,
        batch_size: int,
        max_batch_delay: float,
        sealed: trio.MemorySendChannel[SealedBatch],
        clock: Callable[[], float],
    ) -> None:
        self._clock = clock
        self.core = BatchMaker(batch_size, max_batch_delay, clock())
        self._sealed = sealed
        self._rearmed = trio.Event()
        self.transactions = 0
        #: sealed here and not yet submitted for broadcast; the consumer calls `submitted()`
        self.unsubmitted = 0

    async def add_many(self, txs: list[bytes]) -> None:
        """Add a chunk read off one client connection; blocks while the pipeline is full."""
        now = self._clock()
        ready: list[SealedBatch] = []
        add = self.core.add
        for tx in txs:
            sealed = add(tx, now, parse_sample(tx) if tx[:1] == b"\x00" else None)
            if sealed is not None:
                ready.append(sealed)
        self.transactions += len(txs)
        if ready:
            self._rearmed.set()
        self.unsubmitted += len(ready)
        for batch in ready:
            await self._sealed.send(batch)

    def submitted(self) -> None:
        self.unsubmitted -= 1

    async def run_timer(self) -> None:
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
                await self._sealed.send(sealed)

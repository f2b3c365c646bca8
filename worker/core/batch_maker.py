"""BatchMaker: the sans-IO core that turns transactions into batches.

Mirrors the original: a batch seals when its accumulated size reaches `batch_size`
(the crossing transaction is included, order kept) or when the `max_batch_delay`
timer fires with something in it; never empty; the timer restarts after every seal.
Time is passed in, so the rules are tested without sockets or sleeps. The timer ticks
every `max_batch_delay` from the last seal; while no batch is open the shell need not
wake for it (`wake_at`), and the first transaction finds the tick it would have reached.

Transactions arrive as runs (worker/wire/transactions.py): the crossing transaction
of a run is found by arithmetic (one size) or a bisection (mixed sizes), and a batch
is its runs' item bytes joined once under the array header, so a batch costs no Python
work per transaction. A sealed batch carries its encoded message.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Literal

from worker.wire import messages as wire
from worker.wire.transactions import Sample, TxRun, parse_sample

__all__ = ["BatchMaker", "Sample", "SealReason", "SealedBatch", "parse_sample"]

SealReason = Literal["size", "timeout"]


@dataclass(frozen=True, slots=True)
class SealedBatch:
    #: the encoded Batch message (what is sent, hashed and stored)
    data: bytes
    #: transactions in it
    count: int
    #: payload bytes of its transactions
    size: int
    reason: SealReason
    sealed_at: float
    #: when its first transaction arrived
    opened_at: float = 0.0
    #: benchmark samples it holds: (counter, client send time or 0.0 if not stamped)
    samples: list[Sample] = field(default_factory=list)

    @property
    def transactions(self) -> list[bytes]:
        """The transactions, decoded (tests, and faults that rewrite a batch)."""
        msg = wire.decode(self.data, len(self.data))
        assert isinstance(msg, wire.Batch)
        return msg.transactions

    @classmethod
    def of(
        cls, transactions: list[bytes], reason: SealReason = "size", **kw: object
    ) -> SealedBatch:
        """A sealed batch of given transactions (tests)."""
        data = wire.encode_batch(transactions)
        size = sum(map(len, transactions))
        return cls(data, len(transactions), size, reason, **kw)  # type: ignore[arg-type]


class BatchMaker:
    def __init__(self, batch_size: int, max_batch_delay: float, now: float) -> None:
        self.batch_size = batch_size
        self.max_batch_delay = max_batch_delay
        self.deadline = now + max_batch_delay
        self._items: list[memoryview] = []
        self._count = 0
        self._size = 0
        self._samples: list[Sample] = []
        self._opened_at = now

    @property
    def pending_size(self) -> int:
        return self._size

    @property
    def pending_count(self) -> int:
        return self._count

    def add(self, tx: bytes, now: float, sample: Sample | None = None) -> SealedBatch | None:
        """Append one transaction; returns the batch if this one made it reach `batch_size`."""
        sealed = self.add_run(TxRun.of([tx], [(0, sample)] if sample else None), now)
        return sealed[0] if sealed else None

    def wake_at(self) -> float:
        """When `on_timer` has something to do: the deadline if a batch is open, else
        never (an idle worker needs no timer; the first transaction re-arms it)."""
        return self.deadline if self._count else math.inf

    def add_run(self, run: TxRun, now: float) -> list[SealedBatch]:
        """Append a run of transactions; returns the batches it completed, in order."""
        if not self._count and now >= self.deadline and self.max_batch_delay > 0:
            # The timer did not tick while idle: its next tick, as if it had kept ticking.
            ticks = math.floor((now - self.deadline) / self.max_batch_delay) + 1
            self.deadline += ticks * self.max_batch_delay
        sealed: list[SealedBatch] = []
        cumulative = None if run.uniform else run.cumulative()
        start = 0
        while start < run.count:
            if not self._count:
                self._opened_at = now
            need = self.batch_size - self._size  # > 0: a batch seals once it reaches it
            if run.uniform:
                take = min(run.count - start, max(1, -(-need // run.uniform)))
                added = take * run.uniform
            else:
                assert cumulative is not None
                base = cumulative[start - 1] if start else 0
                crossing = bisect_left(cumulative, base + need, lo=start)
                take = min(crossing + 1, run.count) - start
                added = cumulative[start + take - 1] - base
            end = start + take
            begin, stop = run.offset(start, cumulative), run.offset(end, cumulative)
            self._items.append(memoryview(run.items)[begin:stop])
            self._samples += [s for i, s in run.samples if start <= i < end]
            self._count += take
            self._size += added
            start = end
            if self._size >= self.batch_size:
                sealed.append(self._seal("size", now))
        return sealed

    def on_timer(self, now: float) -> SealedBatch | None:
        """Call once `deadline` passed: seals a non-empty batch, re-arms the timer either way."""
        if now < self.deadline:
            return None
        if not self._count:
            self.deadline = now + self.max_batch_delay
            return None
        return self._seal("timeout", now)

    def _seal(self, reason: SealReason, now: float) -> SealedBatch:
        data = wire.encode_batch_items(self._items, self._count)
        batch = SealedBatch(
            data, self._count, self._size, reason, now, self._opened_at, self._samples
        )
        for item in self._items:
            item.release()
        self._items, self._count, self._size, self._samples = [], 0, 0, []
        self.deadline = now + self.max_batch_delay
        return batch

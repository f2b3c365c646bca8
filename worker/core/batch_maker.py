"""BatchMaker: the sans-IO core that turns transactions into batches.

Mirrors the original: a batch seals when its accumulated size reaches `batch_size`
(the crossing transaction is included, order kept) or when the `max_batch_delay`
timer fires with something in it; never empty; the timer restarts after every seal.
Time is passed in, so the rules are tested without sockets or sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SealReason = Literal["size", "timeout"]
Sample = tuple[int, float]


@dataclass(frozen=True, slots=True)
class SealedBatch:
    transactions: list[bytes]
    size: int
    reason: SealReason
    sealed_at: float
    #: when its first transaction arrived
    opened_at: float = 0.0
    #: benchmark samples it holds: (counter, client send time or 0.0 if not stamped)
    samples: list[Sample] = field(default_factory=list)


class BatchMaker:
    def __init__(self, batch_size: int, max_batch_delay: float, now: float) -> None:
        self.batch_size = batch_size
        self.max_batch_delay = max_batch_delay
        self.deadline = now + max_batch_delay
        self._txs: list[bytes] = []
        self._size = 0
        self._samples: list[Sample] = []
        self._opened_at = now

    @property
    def pending_size(self) -> int:
        return self._size

    def add(self, tx: bytes, now: float, sample: Sample | None = None) -> SealedBatch | None:
        """Append one transaction; returns the batch if this one made it reach `batch_size`."""
        if not self._txs:
            self._opened_at = now
        self._txs.append(tx)
        self._size += len(tx)
        if sample is not None:
            self._samples.append(sample)
        if self._size >= self.batch_size:
            return self._seal("size", now)
        return None

    def on_timer(self, now: float) -> SealedBatch | None:
        """Call once `deadline` passed: seals a non-empty batch, re-arms the timer either way."""
        if now < self.deadline:
            return None
        if not self._txs:
            self.deadline = now + self.max_batch_delay
            return None
        return self._seal("timeout", now)

    def _seal(self, reason: SealReason, now: float) -> SealedBatch:
        batch = SealedBatch(self._txs, self._size, reason, now, self._opened_at, self._samples)
        self._txs, self._size, self._samples = [], 0, []
        self.deadline = now + self.max_batch_delay
        return batch


def parse_sample(tx: bytes) -> Sample | None:
    """A benchmark sample (byte 0 = 0, bytes 1..9 = u64 counter), else None.

    The testbed's load client also stamps its send time (u64 ns since the epoch) in
    bytes 9..17, inside the original's padding, so workers can export sample latency.
    """
    if len(tx) < 9 or tx[0] != 0:
        return None
    sent_ns = int.from_bytes(tx[9:17], "big") if len(tx) >= 17 else 0
    return int.from_bytes(tx[1:9], "big"), sent_ns / 1e9

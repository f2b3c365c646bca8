"""What one worker keeps as evidence of its own batches: one record per batch at quorum.

The harness, the reports and the scenario checker read these; `Records` caps how many
are kept so a long run cannot grow them without bound.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from worker.core.batch_maker import SealedBatch

MAX_RECORDS = 500_000


@dataclass(frozen=True, slots=True)
class QuorumRecord:
    """One own batch that reached quorum: what the harness and the checker need."""

    digest: str
    sealed_at: float
    quorum_at: float
    transactions: int
    size: int
    reason: str
    acked_by: tuple[str, ...]
    stake: int
    samples: tuple[int, ...]

    @classmethod
    def of(
        cls,
        sealed: SealedBatch,
        digest: bytes,
        acked_by: tuple[str, ...],
        stake: int,
        *,
        now: float,
        wall: float,
    ) -> QuorumRecord:
        """`now` is the clock `sealed` was stamped with; `wall` the same instant in epoch
        seconds (records carry wall-clock times so authorities can be compared)."""
        return cls(
            digest=digest.hex(),
            sealed_at=wall - (now - sealed.sealed_at),
            quorum_at=wall,
            transactions=sealed.count,
            size=sealed.size,
            reason=sealed.reason,
            acked_by=acked_by,
            stake=stake,
            samples=tuple(counter for counter, _ in sealed.samples),
        )


class Records(list[QuorumRecord]):
    """The records of batches stored after quorum, at most `limit` of them."""

    def __init__(self, limit: int = MAX_RECORDS) -> None:
        super().__init__()
        self.limit = limit

    def keep(self, record: QuorumRecord) -> None:
        if len(self) < self.limit:
            self.append(record)

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self]

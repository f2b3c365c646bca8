"""What the checker reads: the evidence a driver collects after a run, and a check's result.

Plain data, no IO: the backends fill it from stores, quorum records and the primaries'
collected digests; the checks in faults/checker.py and faults/liveness.py judge it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from faults.plan import Step


@dataclass
class WorkerEvidence:
    authority: str
    worker_id: int
    #: own batches that reached quorum: dicts with digest, quorum_at, acked_by, stake
    records: list[dict[str, Any]]
    #: digest hex -> True if the stored bytes hash to the key
    stored: dict[str, bool]
    #: every digest this worker sent to a peer (own batches, equivocations, replays)
    sent: set[str] = field(default_factory=set)


@dataclass
class Evidence:
    names: list[str]  # authorities in committee order (index = plan target)
    stakes: dict[str, int]
    workers: list[WorkerEvidence]
    #: authority -> digests (hex) its collector got as OthersBatch (reported before the ack)
    reported_others: dict[str, set[str]]
    steps: list[Step]
    load_start: float  # wall clock, plan time 0
    load_end: float
    byzantine: set[str]  # authorities that were Byzantine at any time

    @property
    def total(self) -> int:
        return sum(self.stakes.values())

    @property
    def quorum(self) -> int:
        return 2 * self.total // 3 + 1

    @property
    def validity(self) -> int:
        return (self.total + 2) // 3

    def honest(self, name: str) -> bool:
        return name not in self.byzantine


@dataclass
class CheckResult:
    name: str
    ok: bool
    evidence: str
    examples: list[str] = field(default_factory=list)
    #: how many items (batches, acks, windows) the check looked at
    examined: int = -1  # -1: not counted
    #: failed only because it examined nothing (never a safety violation found)
    vacuous: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "ok": self.ok,
            "evidence": self.evidence,
            "examples": self.examples[:10],
            "examined": self.examined,
        }


def honest_records(ev: Evidence) -> Iterable[tuple[WorkerEvidence, dict[str, Any]]]:
    for w in ev.workers:
        if ev.honest(w.authority):
            for r in w.records:
                yield w, r

"""Helpers for the QuorumWaiter tests: a waiter with test timings, scripted events."""

from __future__ import annotations

import itertools
from typing import Any

from worker.core.quorum_waiter import (
    Action,
    QuorumWaiter,
    Send,
)

INITIAL, MAX_DELAY, REQUEST_TIMEOUT, WINDOW = 0.2, 1.0, 5.0, 5.0


def unit_stakes(n: int) -> dict[str, int]:
    return {"me": 1} | {f"p{i}": 1 for i in range(1, n)}


def make(stakes: dict[str, int], peers: list[str] | None = None, **overrides: Any) -> QuorumWaiter:
    total = sum(stakes.values())
    params: dict[str, Any] = {
        "me": "me",
        "stakes": stakes,
        "peers": [p for p in stakes if p != "me"] if peers is None else peers,
        "quorum_threshold": 2 * total // 3 + 1,
        "max_pending": 10,
        "retry_initial_delay": INITIAL,
        "retry_max_delay": MAX_DELAY,
        "request_timeout": REQUEST_TIMEOUT,
        "post_quorum_delivery": WINDOW,
        "quorum_timeout": None,
        "next_request_id": itertools.count(1).__next__,
    }
    return QuorumWaiter(**(params | overrides))


def rids(actions: list[Action]) -> dict[tuple[int, str], int]:
    """(batch, peer) -> request id of the Sends among `actions`."""
    return {(a.batch_id, a.peer): a.request_id for a in actions if isinstance(a, Send)}


def submit(w: QuorumWaiter, batch_id: int, now: float = 0.0) -> dict[str, int]:
    return {peer: rid for (_, peer), rid in rids(w.submit(batch_id, now)).items()}


def run(w: QuorumWaiter, start: float, end: float, step: float = 0.1) -> list[Action]:
    """Tick like a shell would, collecting everything emitted."""
    actions: list[Action] = []
    for i in range(1, round((end - start) / step) + 1):
        actions += w.on_tick(start + i * step)
    return actions


def ack(w: QuorumWaiter, rid: int, peer: str, now: float = 0.0) -> list[Action]:
    return w.on_response(rid, peer, True, now)


def reject(w: QuorumWaiter, rid: int, peer: str, now: float = 0.0) -> list[Action]:
    return w.on_response(rid, peer, False, now)

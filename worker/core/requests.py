"""Per-peer request bookkeeping shared by every transport, with one timeout policy.

A request a transport accepted is tracked here from `send` until it is answered, fails,
or waits longer than `request_timeout`: then the transport fails it with "timeout" and
forgets it, so a peer that never answers (a silent Byzantine one) cannot grow the table.
An answer arriving after that is unknown (counted by the transport, never delivered).
Every request gets the same timeout, so deadlines grow in insertion order and expiry
only looks at the front of the table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class RequestTable(Generic[T]):
    """Request id -> (deadline, value), in the order requests were added."""

    def __init__(self, timeout: float) -> None:
        if timeout <= 0:
            raise ValueError("request timeout must be > 0")
        self.timeout = timeout
        self._entries: dict[int, tuple[float, T]] = {}

    def add(self, request_id: int, now: float, value: T, deadline: float | None = None) -> bool:
        """Track a request (deadline: now + timeout unless given); False if the id is
        already tracked (the caller fails the newcomer: ids are unique per peer)."""
        if request_id in self._entries:
            return False
        self._entries[request_id] = (now + self.timeout if deadline is None else deadline, value)
        return True

    def pop(self, request_id: int) -> tuple[float, T] | None:
        """The answered request's (deadline, value), or None if it is not tracked."""
        return self._entries.pop(request_id, None)

    def expire(self, now: float) -> list[int]:
        """Forget and return every request whose deadline passed."""
        expired = []
        for request_id, (deadline, _) in self._entries.items():
            if deadline > now:
                break
            expired.append(request_id)
        for request_id in expired:
            del self._entries[request_id]
        return expired

    def take_all(self) -> dict[int, tuple[float, T]]:
        """Forget and return everything (the link is gone)."""
        entries, self._entries = self._entries, {}
        return entries

    def next_deadline(self) -> float | None:
        for deadline, _ in self._entries.values():
            return deadline
        return None

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[int]:
        return iter(self._entries)


def expiry_period(timeout: float) -> float:
    """How often a transport expires its tables: a tenth of the timeout, within 50 ms..1 s."""
    return min(max(timeout / 10, 0.05), 1.0)

"""Group commit: one synced store write at a time, and every batch that arrives while it
is in flight goes into the next one.

A synced LevelDB write costs about the same for one batch as for several (the sync
dominates), so the processor's writes (its own batches at quorum and peers' batches)
queue here and are committed in groups, one at a time, in a thread (the event loop
never waits on the disk). `put` returns only once its group's write returned:
"persisted before acked" holds for every batch of a group.

The hand-off is lean because a lightly loaded worker writes a group per batch: `put`
starts the write itself when none is in flight, and the thread's completion (through
the trio token) wakes the group's waiters and starts the next group, with no task of
its own in between. `run` only forgets confirmed reports that found no batch write to
ride along with (after DELIVERED_LINGER, unsynced, and at the end), and at the end waits
for the write in flight, so the store is never closed under it.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

from worker.store import STORE_ERRORS, BatchStore, Write

#: A group is closed to newcomers once it holds this many bytes (bounds one write).
MAX_GROUP_BYTES = 32 << 20
#: Seconds confirmed reports wait for a batch write to ride along with before they are
#: forgotten in a write of their own (a write per confirmation would double the writes).
DELIVERED_LINGER = 0.5


class StoreUnavailable(Exception):
    """The store refused a write (disk full, no descriptors): back-pressure, not a crash."""


@dataclass(eq=False)
class _Group:
    writes: list[Write] = field(default_factory=list)
    size: int = 0
    done: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None


class StoreWriter:
    def __init__(self, store: BatchStore, max_group_bytes: int = MAX_GROUP_BYTES) -> None:
        self.store = store
        self._max = max_group_bytes
        self._groups: deque[_Group] = deque()  # waiting to be written, oldest first
        self._delivered: list[tuple[int, bytes]] = []
        self._writing: _Group | None = None  # the group being written
        self._token: trio.lowlevel.TrioToken | None = None
        self._changed = trio.Event()  # reports to forget arrived, or (closing) a write ended
        self._closing = False
        self.writes = 0  # batches written
        self.commits = 0  # synced writes that carried them

    async def put(self, digest: bytes, serialized: bytes, report: int | None = None) -> None:
        """Store a batch (with its pending report); returns once it is on disk.
        StoreUnavailable if the store refused its group's write."""
        last = self._groups[-1] if self._groups else None
        group = last if last is not None and last.size < self._max else _Group()
        if group is not last:
            self._groups.append(group)
        group.writes.append((digest, serialized, report))
        group.size += len(serialized)
        if self._writing is None:
            self._start()
        await group.done.wait()
        if group.error is not None:
            if isinstance(group.error, STORE_ERRORS):
                raise StoreUnavailable(str(group.error)) from group.error
            raise group.error

    def reports_delivered(self, reports: Iterable[tuple[int, bytes]]) -> None:
        """Forget these pending reports with the next write (no wait)."""
        first = not self._delivered
        self._delivered += reports
        if first and self._delivered:
            self._notify()  # `run` starts the linger

    @property
    def queued(self) -> int:
        """Batches waiting for a write."""
        return sum(len(g.writes) for g in self._groups)

    async def run(self) -> None:
        """Forget lingering confirmed reports; at the end, wait for the write in flight."""
        try:
            while True:
                if not self._delivered:
                    await self._wait()
                    continue
                with trio.move_on_after(DELIVERED_LINGER):
                    while self._delivered:  # a batch write may take them along meanwhile
                        await self._wait()
                if self._delivered and self._writing is None:
                    self._start()
        finally:
            self._closing = True
            with trio.CancelScope(shield=True):
                while self._writing is not None:
                    await self._wait()
                if self._delivered and not self.store.closed:
                    self._start()  # forgotten now, not re-sent after a restart
                    while self._writing is not None:
                        await self._wait()

    # -- internals -----------------------------------------------------------------------
    def _start(self) -> None:
        """Write the oldest group (and the reports to forget) in a thread."""
        group = self._groups.popleft() if self._groups else _Group()
        delivered, self._delivered = self._delivered, []
        if delivered:
            self._notify()  # `run`'s linger for them is over: they ride along here
        self._writing = group
        if self._token is None:
            self._token = trio.lowlevel.current_trio_token()
        token = self._token

        def write() -> None:
            self.store.put_many(group.writes, delivered)

        def deliver(result: Any) -> None:  # in the thread; an outcome.Outcome
            with contextlib.suppress(trio.RunFinishedError):  # the worker is gone
                token.run_sync_soon(self._finished, group, result)

        # No thread name: trio would set it and reset it through ctypes for every job,
        # which measured 35-45 us of CPU per write here (a synced 5 KB put costs ~100).
        trio.lowlevel.start_thread_soon(write, deliver)

    def _finished(self, group: _Group, result: Any) -> None:
        """In the trio thread: the group's write returned (`result` holds how)."""
        try:
            result.unwrap()
        except BaseException as exc:  # handed to the group's waiters, who raise it
            group.error = exc
        else:
            self.writes += len(group.writes)
            self.commits += bool(group.writes)
        self._writing = None
        group.done.set()
        if self._groups:
            self._start()
        elif self._closing:
            self._notify()

    def _notify(self) -> None:
        self._changed.set()

    async def _wait(self) -> None:
        self._changed = trio.Event()
        await self._changed.wait()

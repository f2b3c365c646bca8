"""One lane per authority: a scenario's actions run off the runner's thread.

A restart brings a process back, opens its stores and rediscovers its peers: seconds on
a loaded machine. Were it carried out on the runner's thread, every later step would wait
for it and the plan would drift (a restart of two workers once held steps planned at 13 s
until 41 s). Each authority gets a serial lane instead: its actions run in plan order
(a crash never overtakes the restart before it), the lanes of different authorities run
at once, and issuing an action never waits. Each action records when it started and
ended, in plan time, so the report says how late every step really ran.

Lanes are daemon threads: a backend call stuck past the flow's deadlines must not keep
the interpreter from exiting (every backend call has its own timeout besides).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any

Clock = Callable[[], float]


class Lanes:
    """Serial lanes by authority index; `record` dicts are filled in as actions run."""

    def __init__(self, clock: Clock) -> None:
        #: plan time now (seconds since the load started)
        self.clock = clock
        self._queues: dict[int, queue.SimpleQueue[Callable[[], None] | None]] = {}
        self._idle = threading.Condition()
        self._outstanding = 0
        self.errors: list[tuple[str, BaseException]] = []

    def submit(
        self, index: int, record: dict[str, Any], what: str, fn: Callable[..., Any], *args: Any
    ) -> None:
        """Run `fn(*args)` on the authority's lane; `record["started"|"ended"][index]` get
        its plan times, and a failure is kept (see `raise_failure`)."""
        started = record.setdefault("started", {})
        ended = record.setdefault("ended", {})

        def action() -> None:
            started[str(index)] = round(self.clock(), 3)
            try:
                fn(*args)
            except Exception as exc:
                record.setdefault("errors", {})[str(index)] = repr(exc)
                with self._idle:
                    self.errors.append((f"{what} of authority {index}", exc))
            finally:
                ended[str(index)] = round(self.clock(), 3)
                with self._idle:
                    self._outstanding -= 1
                    self._idle.notify_all()

        with self._idle:
            self._outstanding += 1
        self._lane(index).put(action)

    def _lane(self, index: int) -> queue.SimpleQueue[Callable[[], None] | None]:
        if index not in self._queues:
            jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
            self._queues[index] = jobs
            threading.Thread(target=_serve, args=(jobs,), name=f"lane-{index}", daemon=True).start()
        return self._queues[index]

    def raise_failure(self) -> None:
        """Raise the first action that failed (the flow then aborts the run, saying why)."""
        with self._idle:
            if self.errors:
                what, exc = self.errors[0]
                raise RuntimeError(f"{what} failed: {exc!r}") from exc

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until every action issued so far ended; False if some still run."""
        with self._idle:
            return self._idle.wait_for(lambda: self._outstanding == 0, timeout)

    def close(self) -> None:
        """End each lane's thread once its queued actions have run."""
        for jobs in self._queues.values():
            jobs.put(None)
        self._queues.clear()


def _serve(jobs: queue.SimpleQueue[Callable[[], None] | None]) -> None:
    while (job := jobs.get()) is not None:
        job()

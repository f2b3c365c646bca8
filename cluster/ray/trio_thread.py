"""A trio loop on a dedicated thread, entered from other threads through its token.

Ray runs actor methods on its own threads, and trio wants to own the thread it runs
on, so each actor keeps one loop thread and crosses into it with `trio.from_thread`.
A crossing costs ~100 us: callers cross once per control call, never per transaction.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio

T = TypeVar("T")


class LoopStopped(RuntimeError):
    """The loop is not running (never started, stopped, or crashed: see `__cause__`)."""


class TrioThread:
    """Owns one `trio.run` on a daemon thread; services run as tasks of its root nursery.

    If a service crashes, the loop ends and every later call raises `LoopStopped` from
    the crash, so a broken worker is reported at the next control call, not hidden.
    """

    def __init__(self, name: str = "trio") -> None:
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self.error: BaseException | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._thread.start()
        self._ready.wait()
        self._check()

    def stop(self, timeout: float = 30.0) -> None:
        """Cancel every service (their `finally` blocks run) and wait for the thread."""
        if self._token is not None and self._thread.is_alive():
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._cancel, trio_token=self._token)
        if self._thread.is_alive():
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"trio thread did not stop within {timeout:g} s")

    @property
    def running(self) -> bool:
        return self._thread.is_alive() and self._nursery is not None

    # -- crossing into the loop -----------------------------------------------------------------
    def run(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run `await fn(*args)` in the loop and return its result (blocks this thread)."""
        self._check()
        try:
            return trio.from_thread.run(fn, *args, trio_token=self._token)
        except trio.RunFinishedError as exc:
            raise LoopStopped("the trio loop has stopped") from self.error or exc

    def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        """Call `fn(*args)` in the loop thread, so it sees a consistent state."""
        self._check()
        try:
            return trio.from_thread.run_sync(fn, *args, trio_token=self._token)
        except trio.RunFinishedError as exc:
            raise LoopStopped("the trio loop has stopped") from self.error or exc

    def start_service(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """`nursery.start(fn, *args)` in the root nursery: returns what `fn` reports started."""

        async def start() -> Any:
            assert self._nursery is not None
            return await self._nursery.start(fn, *args)

        return self.run(start)

    # -- the loop thread --------------------------------------------------------------------------
    def _check(self) -> None:
        if self.error is not None:
            raise LoopStopped(f"the trio loop crashed: {self.error!r}") from self.error
        if self._token is None or not self._thread.is_alive():
            raise LoopStopped("the trio loop is not running")

    def _cancel(self) -> None:
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def _main(self) -> None:
        try:
            trio.run(self._root)
        except BaseException as exc:  # kept for the next caller
            self.error = exc
        finally:
            self._nursery = None
            self._ready.set()

    async def _root(self) -> None:
        async with trio.open_nursery() as nursery:
            self._token = trio.lowlevel.current_trio_token()
            self._nursery = nursery
            self._ready.set()
            await trio.sleep_forever()

"""Awaiting a condition on state that other tasks change: no polling, no sleeps.

Whoever changes watched state calls `notify()`; a waiter re-checks its predicate after
every notification. Cheap enough to call on every pipeline step.
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class Changes:
    def __init__(self) -> None:
        self._event = trio.Event()

    def notify(self) -> None:
        self._event.set()
        self._event = trio.Event()

    async def wait(self) -> None:
        """The next notification."""
        await self._event.wait()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; it is re-checked after every notification."""
        while not predicate():
            await self._event.wait()

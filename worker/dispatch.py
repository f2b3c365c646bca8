"""The wiring's dispatch: each inbound transport event to the stage that owns it.

It never waits on a stage, so acks reach the broadcaster whatever peers' requests do
(issue 12: no shared stage may wait on one peer). Being synchronous, it runs inline in
the transport's reader tasks where the transport offers that (`deliver_inline`): a
request or an ack then reaches its stage without a hop through a task of its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Protocol

import trio

from worker.transport.base import RequestFailed, RequestReceived, ResponseReceived, TransportEvent
from worker.wire import messages as wire


class AckHandler(Protocol):
    def on_response(self, event: ResponseReceived) -> None: ...
    def on_failure(self, event: RequestFailed) -> None: ...


#: Refusals being written at once when the processor is full; beyond, requests are dropped.
MAX_OVERLOAD_REFUSALS = 64


class Dispatch:
    """Inbound transport events to the stage that owns them, never waiting on a stage:
    acks reach the broadcaster whatever peers' requests do. A request the processor has
    no room for is answered `Reject("overloaded")` (the sender retries later). `admit`:
    the link faults' filter (worker/transport/faulty.py), applied first."""

    def __init__(
        self,
        broadcaster: AckHandler,
        to_processor: trio.MemorySendChannel[RequestReceived],
        refused: Counter[str] | None = None,
        admit: Callable[[TransportEvent], TransportEvent | None] | None = None,
    ) -> None:
        self._broadcaster = broadcaster
        self._to_processor = to_processor
        self.refused: Counter[str] = Counter() if refused is None else refused
        self._admit = admit
        self._refusing = 0
        self._nursery: trio.Nursery | None = None  # the refusals' (while `run` runs)

    def __call__(self, event: TransportEvent) -> None:
        if self._admit is not None:
            admitted = self._admit(event)
            if admitted is None:
                return
            event = admitted
        match event:
            case ResponseReceived():  # an answer to one of our batches
                self._broadcaster.on_response(event)
            case RequestFailed():  # one of our batches did not get through
                self._broadcaster.on_failure(event)
            case RequestReceived():  # a peer's batch
                try:
                    self._to_processor.send_nowait(event)
                except trio.WouldBlock:
                    self.refused["overloaded"] += 1
                    if self._refusing < MAX_OVERLOAD_REFUSALS and self._nursery is not None:
                        self._refusing += 1
                        self._nursery.start_soon(self._refuse, event)

    async def run(self, events: trio.MemoryReceiveChannel[TransportEvent]) -> None:
        """Dispatch what the transport queues on `events` (all of it, or its failures)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                async for event in events:
                    self(event)
            finally:
                self._nursery = None
            nursery.cancel_scope.cancel()

    async def _refuse(self, event: RequestReceived) -> None:
        try:
            await event.respond(wire.encode(wire.Reject("overloaded")))
        finally:
            self._refusing -= 1

"""The wiring's dispatch: each inbound transport event to the stage that owns it.

It never waits on a stage, so acks reach the broadcaster whatever peers' requests do
(issue 12: no shared stage may wait on one peer).
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


async def dispatch(
    events: trio.MemoryReceiveChannel[TransportEvent],
    broadcaster: AckHandler,
    to_processor: trio.MemorySendChannel[RequestReceived],
    refused: Counter[str] | None = None,
    admit: Callable[[TransportEvent], TransportEvent | None] | None = None,
) -> None:
    """Inbound transport events to the stage that owns them, never waiting on a stage:
    acks reach the broadcaster whatever peers' requests do. A request the processor has
    no room for is answered `Reject("overloaded")` (the sender retries later). `admit`:
    the link faults' filter (worker/transport/faulty.py), applied inline."""
    refused = Counter() if refused is None else refused
    refusing = 0

    async def refuse(event: RequestReceived) -> None:
        nonlocal refusing
        try:
            await event.respond(wire.encode(wire.Reject("overloaded")))
        finally:
            refusing -= 1

    async with trio.open_nursery() as nursery:
        async for event in events:
            if admit is not None and (event := admit(event)) is None:  # type: ignore[assignment]
                continue
            match event:
                case ResponseReceived():  # an answer to one of our batches
                    broadcaster.on_response(event)
                case RequestFailed():  # one of our batches did not get through
                    broadcaster.on_failure(event)
                case RequestReceived():  # a peer's batch
                    try:
                        to_processor.send_nowait(event)
                    except trio.WouldBlock:
                        refused["overloaded"] += 1
                        if refusing < MAX_OVERLOAD_REFUSALS:
                            refusing += 1
                            nursery.start_soon(refuse, event)
        nursery.cancel_scope.cancel()

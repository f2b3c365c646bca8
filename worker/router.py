"""The event router: transport events to the component that owns them.

Responses (acks and rejects) and failures go to the QuorumWaiter side, inbound
requests to the Processor. Kept separate so either transport plugs in unchanged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from worker.transport.base import (
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    TransportEvent,
)


class EventRouter:
    def __init__(
        self,
        on_response: Callable[[ResponseReceived], None],
        on_failure: Callable[[RequestFailed], None],
        on_request: Callable[[RequestReceived], Awaitable[None]],
    ) -> None:
        self._on_response = on_response
        self._on_failure = on_failure
        self._on_request = on_request
        self.routed = {"response": 0, "failure": 0, "request": 0}

    async def route(self, event: TransportEvent) -> None:
        match event:
            case ResponseReceived():
                self.routed["response"] += 1
                self._on_response(event)
            case RequestFailed():
                self.routed["failure"] += 1
                self._on_failure(event)
            case RequestReceived():
                self.routed["request"] += 1
                await self._on_request(event)

    async def run(self, events: trio.MemoryReceiveChannel[TransportEvent]) -> None:
        async for event in events:
            await self.route(event)

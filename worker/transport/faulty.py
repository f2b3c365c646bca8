"""A transport wrapper that emulates network faults on any transport.

It applies the worker's `LinkPlan` to what this worker sends (requests through
`send`, responses through `respond`) and drops what arrives from a partitioned peer.
A lost message simply never arrives: the sender's request timeout notices, as on a
real network. With no network fault set, messages pass straight through. Held
messages wait in tasks of the wrapper's own nursery (no queue between).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping

import trio

from worker.core.faults import LinkPlan
from worker.transport.base import (
    PeerName,
    RequestReceived,
    Respond,
    ResponseReceived,
    SendRequest,
    Transport,
    TransportEvent,
)


class FaultyTransport(Transport):
    """`events` are the inner transport's: the caller passes each through `admit` itself
    (the worker's dispatch does), saving a task and a channel hop per message."""

    def __init__(self, inner: Transport, plan: LinkPlan) -> None:
        self.inner = inner
        self.plan = plan
        self.rejections = inner.rejections
        self.handshakes = inner.handshakes
        self.dropped: Counter[str] = Counter()  # by "outbound" / "inbound"
        self.events = inner.events
        self._nursery: trio.Nursery | None = None

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            address = await nursery.start(self.inner.serve)
            task_status.started(address)

    def send(self, request: SendRequest) -> None:
        hold = self.plan.outbound(request.target, len(request.data), trio.current_time())
        if hold is None:
            self.dropped["outbound"] += 1
        elif hold == 0.0 or self._nursery is None:
            self.inner.send(request)
        else:
            self._nursery.start_soon(self._send_at, trio.current_time() + hold, request)

    def connected_peers(self) -> set[PeerName]:
        return {p for p in self.inner.connected_peers() if self.plan.accepts_from(p)}

    def deliver_inline(self, sink: Callable[[TransportEvent], None]) -> bool:
        return self.inner.deliver_inline(sink)  # the sink applies `admit`, as for `events`

    @property
    def peer_id(self) -> str | None:
        return self.inner.peer_id

    def add_peer_addrs(self, addrs: Mapping[PeerName, str]) -> None:
        self.inner.add_peer_addrs(addrs)

    async def wait_discovery(self, expected: set[PeerName]) -> dict[PeerName, str]:
        return await self.inner.wait_discovery(expected)

    async def _send_at(self, due: float, request: SendRequest) -> None:
        await trio.sleep_until(due)
        self.inner.send(request)

    def admit(self, event: TransportEvent) -> TransportEvent | None:
        """The event as the faults let it arrive, or None if it is lost."""
        if self.plan.network_clear:
            return event
        if isinstance(event, ResponseReceived | RequestReceived) and not (
            self.plan.accepts_from(event.peer)
        ):
            self.dropped["inbound"] += 1
            return None
        if isinstance(event, RequestReceived):
            return RequestReceived(event.peer, event.data, self._faulty_respond(event))
        return event

    def _faulty_respond(self, event: RequestReceived) -> Respond:
        async def respond(data: bytes) -> None:
            hold = self.plan.outbound(event.peer, len(data), trio.current_time())
            if hold is None:
                self.dropped["outbound"] += 1
            elif hold and self._nursery is not None:  # answer later, not holding the caller
                self._nursery.start_soon(self._respond_at, trio.current_time() + hold, event, data)
            else:
                await event.respond(data)

        return respond

    @staticmethod
    async def _respond_at(due: float, event: RequestReceived, data: bytes) -> None:
        await trio.sleep_until(due)
        await event.respond(data)

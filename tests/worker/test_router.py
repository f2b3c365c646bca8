"""The event router hands each transport event to the component that owns it."""

from __future__ import annotations

import trio

from worker.router import EventRouter
from worker.transport.base import RequestFailed, RequestReceived, ResponseReceived


async def _noop(_: bytes) -> None:
    return None


async def test_events_reach_their_owner() -> None:
    acks: list[ResponseReceived] = []
    failures: list[RequestFailed] = []
    requests: list[RequestReceived] = []

    async def on_request(event: RequestReceived) -> None:
        requests.append(event)

    router = EventRouter(acks.append, failures.append, on_request)
    send, receive = trio.open_memory_channel(10)
    events = [
        ResponseReceived(1, "a", b"ack"),
        RequestReceived("b", b"batch", _noop),
        RequestFailed(2, "c", "refused"),
        ResponseReceived(3, "a", b"reject"),
    ]
    for event in events:
        send.send_nowait(event)
    send.close()
    await router.run(receive)
    assert acks == [events[0], events[3]]
    assert requests == [events[1]]
    assert failures == [events[2]]
    assert router.routed == {"response": 2, "failure": 1, "request": 1}

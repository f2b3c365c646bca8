"""The wiring's dispatch hands each transport event to the stage that owns it."""

from __future__ import annotations

from collections import Counter

import trio
import trio.testing

from worker.transport.base import (
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    TransportEvent,
)
from worker.wire import messages as wire
from worker.worker import Dispatch


async def _noop(_: bytes) -> None:
    return None


class FakeBroadcaster:
    def __init__(self) -> None:
        self.responses: list[ResponseReceived] = []
        self.failures: list[RequestFailed] = []

    def on_response(self, event: ResponseReceived) -> None:
        self.responses.append(event)

    def on_failure(self, event: RequestFailed) -> None:
        self.failures.append(event)


async def test_events_reach_their_owner() -> None:
    broadcaster = FakeBroadcaster()
    events_tx, events_rx = trio.open_memory_channel[TransportEvent](10)
    to_processor, from_dispatch = trio.open_memory_channel[RequestReceived](10)
    events: list[TransportEvent] = [
        ResponseReceived(1, "a", b"ack"),
        RequestReceived("b", b"batch", _noop),
        RequestFailed(2, "c", "refused"),
        ResponseReceived(3, "a", b"reject"),
    ]
    for event in events:
        events_tx.send_nowait(event)
    events_tx.close()
    await Dispatch(broadcaster, to_processor).run(events_rx)
    assert broadcaster.responses == [events[0], events[3]]
    assert broadcaster.failures == [events[2]]
    assert from_dispatch.receive_nowait() == events[1]
    assert from_dispatch.statistics().current_buffer_used == 0


async def test_a_full_processor_never_holds_up_acks() -> None:
    """Issue 12 item 1: with the processor's channel full, acks still reach the
    broadcaster and the surplus request is answered `Reject("overloaded")`."""
    broadcaster = FakeBroadcaster()
    events_tx, events_rx = trio.open_memory_channel[TransportEvent](10)
    to_processor, from_dispatch = trio.open_memory_channel[RequestReceived](1)
    answers: list[bytes] = []

    async def respond(data: bytes) -> None:
        answers.append(data)

    for i in range(3):
        events_tx.send_nowait(RequestReceived("b", b"%d" % i, respond))
    events_tx.send_nowait(ResponseReceived(9, "a", b"ack"))
    refused: Counter[str] = Counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(Dispatch(broadcaster, to_processor, refused).run, events_rx)
        await trio.testing.wait_all_tasks_blocked()
        assert broadcaster.responses == [ResponseReceived(9, "a", b"ack")]
        assert events_rx.statistics().current_buffer_used == 0
        assert from_dispatch.receive_nowait().data == b"0"
        assert refused == {"overloaded": 2}
        assert answers == [wire.encode(wire.Reject("overloaded"))] * 2
        nursery.cancel_scope.cancel()

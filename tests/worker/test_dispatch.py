"""The wiring's dispatch hands each transport event to the stage that owns it."""

from __future__ import annotations

import trio
import trio.testing

from worker.transport.base import (
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    TransportEvent,
)
from worker.worker import dispatch


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
    await dispatch(events_rx, broadcaster, to_processor)
    assert broadcaster.responses == [events[0], events[3]]
    assert broadcaster.failures == [events[2]]
    assert from_dispatch.receive_nowait() == events[1]
    assert from_dispatch.statistics().current_buffer_used == 0


async def test_a_full_processor_holds_up_the_dispatch() -> None:
    """Back-pressure: with the processor's channel full, dispatch stops reading events."""
    broadcaster = FakeBroadcaster()
    events_tx, events_rx = trio.open_memory_channel[TransportEvent](10)
    to_processor, from_dispatch = trio.open_memory_channel[RequestReceived](1)
    for i in range(3):
        events_tx.send_nowait(RequestReceived("b", b"%d" % i, _noop))
    events_tx.send_nowait(ResponseReceived(9, "a", b"ack"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(dispatch, events_rx, broadcaster, to_processor)
        await trio.testing.wait_all_tasks_blocked()
        assert not broadcaster.responses  # stuck behind the second request
        assert events_rx.statistics().current_buffer_used == 2
        received = [await from_dispatch.receive() for _ in range(3)]
        assert [r.data for r in received] == [b"0", b"1", b"2"]
        await trio.testing.wait_all_tasks_blocked()
        assert broadcaster.responses == [ResponseReceived(9, "a", b"ack")]
        nursery.cancel_scope.cancel()

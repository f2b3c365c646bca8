"""Thin trio readers and writers around the sans-IO frame codec (worker/wire/frames.py).

The codec decides what the bytes mean; these only move bytes between a trio stream and
a `FrameBuffer`, under deadlines: a connection may stay silent between frames for at
most `Deadlines.idle` seconds and must finish a frame it started within
`Deadlines.frame` (a trickle of bytes cannot hold a connection either). A stalled read
raises `Stalled` (a `FrameError`: callers count its reason and close the connection).
Listeners admit at most `max_connections` at a time; the others are closed at once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from worker.wire.frames import LARGE_PAYLOAD, Frame, FrameBuffer, FrameError, tagged_header

#: Bytes asked of the stream per read; below malloc's mmap threshold.
READ_CHUNK = 64 * 1024
STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class Stalled(FrameError):
    """A connection silent past its idle deadline, or too slow to finish a frame."""


@dataclass(frozen=True, slots=True)
class Deadlines:
    """Seconds: `idle` between frames, `frame` to finish one once it started."""

    idle: float = math.inf
    frame: float = math.inf

    @classmethod
    def of_ms(cls, idle: int, frame: int) -> Deadlines:
        return cls(idle / 1000 or math.inf, frame / 1000 or math.inf)


NO_DEADLINES = Deadlines()


async def _fill(stream: trio.abc.ReceiveStream, buffer: FrameBuffer, size: int) -> bool:
    """Feed the buffer one read; False at the end of the stream (FrameError if mid-frame)."""
    view = buffer.receive_buffer()
    if view is not None and isinstance(stream, trio.SocketStream):
        try:
            n = await stream.socket.recv_into(view)
        finally:
            view.release()
        if n:
            buffer.received(n)
            return True
    else:
        if view is not None:
            view.release()
        chunk = await stream.receive_some(size)
        if chunk:
            buffer.receive_data(chunk)
            return True
    buffer.end_of_data()
    return False


async def _fill_before(
    stream: trio.abc.ReceiveStream,
    buffer: FrameBuffer,
    size: int,
    deadlines: Deadlines,
    start: float,
) -> bool:
    """`_fill`, or `Stalled` once the deadline that applies now has passed."""
    partial = buffer.partial
    at = start + deadlines.frame if partial else trio.current_time() + deadlines.idle
    with trio.move_on_at(at):
        return await _fill(stream, buffer, size)
    if partial:
        raise Stalled("frame_timeout", "a frame was not finished in time")
    raise Stalled("idle_timeout", "no frame within the idle deadline")


async def read_frame(
    stream: trio.abc.ReceiveStream,
    buffer: FrameBuffer,
    size: int = READ_CHUNK,
    deadlines: Deadlines = NO_DEADLINES,
) -> bytes | Frame | None:
    """The next frame, or None at a clean end of stream."""
    start = trio.current_time()
    while (item := buffer.next_frame()) is None:
        if not buffer.partial:
            start = trio.current_time()
        if not await _fill_before(stream, buffer, size, deadlines, start):
            return None
    return item


async def read_frames(
    stream: trio.abc.ReceiveStream,
    buffer: FrameBuffer,
    size: int = 1 << 18,
    deadlines: Deadlines = NO_DEADLINES,
) -> list[bytes | Frame] | None:
    """Every frame complete after the next read (at least one), or None at a clean end."""
    start = trio.current_time()
    while not (items := buffer.frames()):
        if not buffer.partial:
            start = trio.current_time()
        if not await _fill_before(stream, buffer, size, deadlines, start):
            return None
    return items


async def write_frame(
    stream: trio.abc.SendStream, kind: int, request_id: int, payload: bytes
) -> None:
    """One tagged frame; a large payload is not copied just to prepend 13 bytes."""
    header = tagged_header(kind, request_id, len(payload))
    if len(payload) <= LARGE_PAYLOAD:
        await stream.send_all(header + payload)
    else:
        await stream.send_all(header)
        await stream.send_all(payload)


class ConnectionLimit:
    """At most `limit` connections at a time; `refused` counts the ones closed at once."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit if limit is not None else math.inf
        self.active = 0
        self.refused = 0

    def wrap(
        self,
        handler: Callable[[trio.SocketStream], Awaitable[object]],
        counter: Counter[str] | None = None,
    ) -> Callable[[trio.SocketStream], Awaitable[None]]:
        async def admitted(stream: trio.SocketStream) -> None:
            if self.active >= self.limit:
                self.refused += 1
                if counter is not None:
                    counter["too_many_connections"] += 1
                stream.socket.close()
                return
            self.active += 1
            try:
                await handler(stream)
            finally:
                self.active -= 1

        return admitted


async def serve_tcp(
    host: str,
    port: int,
    handler: Callable[[trio.SocketStream], Awaitable[object]],
    *,
    limit: ConnectionLimit | None = None,
    refusals: Counter[str] | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on host:port and run `handler` per connection; started with "host:port".
    With `limit`, connections beyond it are closed at once (counted in `refusals`)."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    serve = limit.wrap(handler, refusals) if limit is not None else handler
    async with trio.open_nursery() as nursery:
        task_status.started(f"{host}:{listeners[0].socket.getsockname()[1]}")
        await trio.serve_listeners(serve, listeners, handler_nursery=nursery)

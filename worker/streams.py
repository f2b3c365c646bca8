"""Thin trio readers and writers around the sans-IO frame codec (worker/wire/frames.py).

The codec decides what the bytes mean; these only move bytes between a trio stream and
a `FrameBuffer`. A large payload on a socket is read straight into its final buffer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from worker.wire.frames import LARGE_PAYLOAD, Frame, FrameBuffer, tagged_header

#: Bytes asked of the stream per read; below malloc's mmap threshold.
READ_CHUNK = 64 * 1024
STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


async def _fill(stream: trio.abc.ReceiveStream, buffer: FrameBuffer, size: int) -> bool:
    """Feed the buffer one read; False at the end of the stream (FrameError if mid-frame)."""
    view = buffer.receive_buffer()
    if view is not None and isinstance(stream, trio.SocketStream):
        n = await stream.socket.recv_into(view)
        view.release()
        if n:
            buffer.received(n)
            return True
    else:
        chunk = await stream.receive_some(size)
        if chunk:
            buffer.receive_data(chunk)
            return True
    buffer.end_of_data()
    return False


async def read_frame(
    stream: trio.abc.ReceiveStream, buffer: FrameBuffer, size: int = READ_CHUNK
) -> bytes | Frame | None:
    """The next frame, or None at a clean end of stream."""
    while (item := buffer.next_frame()) is None:
        if not await _fill(stream, buffer, size):
            return None
    return item


async def read_frames(
    stream: trio.abc.ReceiveStream, buffer: FrameBuffer, size: int = 1 << 18
) -> list[bytes | Frame] | None:
    """Every frame complete after the next read (at least one), or None at a clean end."""
    while not (items := buffer.frames()):
        if not await _fill(stream, buffer, size):
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


async def serve_tcp(
    host: str,
    port: int,
    handler: Callable[[trio.SocketStream], Awaitable[object]],
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on host:port and run `handler` per connection; started with "host:port"."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    async with trio.open_nursery() as nursery:
        task_status.started(f"{host}:{port}")
        await trio.serve_listeners(handler, listeners, handler_nursery=nursery)

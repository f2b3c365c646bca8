"""The listening side of the TCP baseline: peers' requests in, our answers out.

No shared stage ever waits on one peer's socket. Each inbound connection has its own
answer writer fed by a bounded queue, so `respond` never blocks (the processor's slots
and the dispatch are never held by a peer that stops reading); every answer frame must
be written within `write_timeout` or the connection is closed. A connection may have at
most `max_inflight_per_peer` requests read but not yet answered on the wire: beyond
that its reader stops reading (back-pressure onto that peer's socket only). The answer
queue is bounded by the same number.

Admission: at most `max_handshaking_connections` connections may be waiting for their
Hello (which must arrive within `min(request_timeout, frame_timeout)`), and at most
`max_connections_per_peer` introduced connections per authority; others are closed at
once ("too_many_connections"). An introduced connection silent for `idle_timeout`, or
that takes longer than `frame_timeout` to finish a frame, is closed ("idle_timeout",
"frame_timeout").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from worker.config import Parameters
from worker.streams import STREAM_ERRORS, ConnectionLimit, Deadlines, read_frame, write_frame
from worker.transport.base import PeerName, RequestReceived, Respond, TransportEvent
from worker.wire import messages as wire
from worker.wire.frames import Frame, FrameBuffer, FrameError, Kind, Truncated

KIND_REQUEST = Kind.REQUEST
KIND_RESPONSE = Kind.RESPONSE
HELLO_REQUEST_ID = 0
#: Hellos are tiny; an unauthenticated dialer must not make us buffer megabytes.
MAX_HELLO_PAYLOAD = 256
_KINDS = (KIND_REQUEST, KIND_RESPONSE)


def frame_buffer(max_payload: int) -> FrameBuffer:
    return FrameBuffer(max_payload, tagged=True, kinds=_KINDS)


def close_stream(stream: trio.SocketStream) -> None:
    """Close synchronously (works while cancelled); wakes any task blocked on the socket."""
    stream.socket.close()


@dataclass(eq=False)
class _Inbound:
    """A peer's connection to us: its requests in, our answers out (queued, own writer)."""

    stream: trio.SocketStream
    slots: trio.Semaphore
    answers: tuple[trio.MemorySendChannel[tuple[int, bytes]], trio.MemoryReceiveChannel]
    closed: bool = False
    queued: int = 0


@dataclass
class Watermarks:
    """High-water marks of what peers made us hold (bounded by the limits; for tests)."""

    values: Counter[str] = field(default_factory=Counter)

    def note(self, name: str, value: int) -> None:
        if value > self.values[name]:
            self.values[name] = value


class InboundLinks:
    """Serves the listener's connections; emits `RequestReceived` through `emit`."""

    def __init__(
        self,
        params: Parameters,
        worker_id: int,
        names_by_key: dict[bytes, PeerName],
        emit: Callable[[TransportEvent], Awaitable[None]],
        rejections: Counter[str],
        handshakes: Counter[str],
        watermarks: Watermarks,
    ) -> None:
        self._max_payload = params.max_message_size
        self._hello_timeout = min(params.request_timeout, params.frame_timeout) / 1000
        self._write_timeout = params.write_timeout / 1000
        self._deadlines = Deadlines.of_ms(params.idle_timeout, params.frame_timeout)
        self._inflight = params.max_inflight_per_peer
        self._per_peer = params.max_connections_per_peer
        self._worker_id = worker_id
        self._names_by_key = names_by_key
        self._emit = emit
        self.rejections, self.handshakes, self.watermarks = rejections, handshakes, watermarks
        self.handshaking = ConnectionLimit(params.max_handshaking_connections)
        self.by_peer: Counter[PeerName] = Counter()
        self.streams: set[trio.SocketStream] = set()

    async def serve(self, stream: trio.SocketStream) -> None:
        """One accepted connection, from its Hello to its end."""
        stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, True)
        if self.handshaking.active >= self.handshaking.limit:
            self.rejections["too_many_connections"] += 1
            close_stream(stream)
            return
        self.streams.add(stream)
        try:
            self.handshaking.active += 1
            buffer = frame_buffer(MAX_HELLO_PAYLOAD)
            try:
                peer = await self._read_hello(stream, buffer)
            finally:
                self.handshaking.active -= 1
            if peer is None:
                return
            if self.by_peer[peer] >= self._per_peer:
                self.rejections["too_many_connections"] += 1
                return
            self.by_peer[peer] += 1
            buffer.max_payload = self._max_payload  # what follows the Hello is kept
            try:
                await self._serve_peer(peer, stream, buffer)
            finally:
                self.by_peer[peer] -= 1
        finally:
            close_stream(stream)
            self.streams.discard(stream)

    async def _serve_peer(
        self, peer: PeerName, stream: trio.SocketStream, buffer: FrameBuffer
    ) -> None:
        conn = _Inbound(
            stream,
            trio.Semaphore(self._inflight),
            trio.open_memory_channel[tuple[int, bytes]](self._inflight),
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_answers, conn, nursery.cancel_scope)
                await self._read_requests(peer, conn, buffer)
                nursery.cancel_scope.cancel()
        finally:
            conn.closed = True

    async def _read_requests(self, peer: PeerName, conn: _Inbound, buffer: FrameBuffer) -> None:
        try:
            while True:
                await conn.slots.acquire()  # at most max_inflight_per_peer unanswered
                frame = await read_frame(conn.stream, buffer, deadlines=self._deadlines)
                self.watermarks.note("inbound_buffer_bytes", buffer.buffered)
                if not isinstance(frame, Frame):
                    return
                if frame.kind != KIND_REQUEST:
                    self.rejections["unknown_request_id"] += 1  # we asked nothing on this link
                    conn.slots.release()
                    continue
                self.watermarks.note("inbound_inflight", self._inflight - conn.slots.value)
                respond = self._responder(conn, frame.request_id)
                await self._emit(RequestReceived(peer, frame.payload, respond))
        except (Truncated, *STREAM_ERRORS):
            pass
        except FrameError as exc:
            self.rejections[exc.reason] += 1

    async def _write_answers(self, conn: _Inbound, scope: trio.CancelScope) -> None:
        """This connection's answers, each within the write deadline, or the link closes."""
        reason = ""
        async for request_id, data in conn.answers[1]:
            conn.queued -= 1
            try:
                with trio.fail_after(self._write_timeout):
                    await write_frame(conn.stream, KIND_RESPONSE, request_id, data)
            except trio.TooSlowError:
                reason = "write_timeout"
            except STREAM_ERRORS:
                reason = "respond_failed"
            if reason:
                self.rejections[reason] += 1
                conn.closed = True
                close_stream(conn.stream)  # the reader sees it and ends the connection
                scope.cancel()
                return
            conn.slots.release()

    def _responder(self, conn: _Inbound, request_id: int) -> Respond:
        async def respond(data: bytes) -> None:
            if conn.closed or len(data) > self._max_payload:
                self.rejections["respond_failed"] += 1
                return
            try:
                conn.answers[0].send_nowait((request_id, data))
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self.rejections["respond_failed"] += 1  # answered twice, or the link is gone
                return
            conn.queued += 1
            self.watermarks.note("answers_queued", conn.queued)

        return respond

    async def _read_hello(self, stream: trio.SocketStream, buffer: FrameBuffer) -> PeerName | None:
        """The committee name the dialer introduces itself as, or None (counted)."""
        frame = None
        with trio.move_on_after(self._hello_timeout):
            try:
                frame = await read_frame(stream, buffer)
            except (Truncated, *STREAM_ERRORS):
                return None  # hung up mid-Hello
            except FrameError as exc:
                self.rejections[exc.reason] += 1
                return None
            if frame is None:
                return None  # closed without a word: nothing was refused
        name, refusal = self._introduced(frame)
        if refusal:
            self.rejections[refusal] += 1
        self.handshakes[refusal or "accepted"] += 1
        return name

    def _introduced(self, frame: bytes | Frame | None) -> tuple[PeerName | None, str]:
        """(the authority a first frame names, "") or (None, the refusal reason)."""
        if not isinstance(frame, Frame):
            return None, "bad_hello"  # silent past the deadline
        try:
            hello = wire.decode(frame.payload, MAX_HELLO_PAYLOAD)
        except wire.WireError:
            hello = None
        if (
            frame.kind != KIND_REQUEST
            or frame.request_id != HELLO_REQUEST_ID
            or not isinstance(hello, wire.Hello)
        ):
            return None, "bad_hello"
        name = self._names_by_key.get(hello.authority)
        if name is None or hello.worker_id != self._worker_id:
            return None, "unknown_peer"
        return name, ""

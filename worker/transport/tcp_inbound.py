"""The listening side of the TCP baseline: peers' requests in, our answers out.

No shared stage ever waits on one peer's socket. `respond` never blocks: the answer to
a connection's only request in flight goes straight to the socket in a non-blocking
write when the socket takes it whole; other answers (or the rest of it) go to the
connection's own answer writer through a bounded queue, which writes what is queued
together (the processor's slots and the dispatch are never held
by a peer that stops reading); every queued answer must be written within
`write_timeout` or the connection is closed. A connection may have at
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

import os
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from worker.config import Parameters
from worker.streams import (
    COALESCE_BYTES,
    MAX_IOV,
    STREAM_ERRORS,
    ConnectionLimit,
    Deadlines,
    read_frame,
    send_parts,
)
from worker.transport.base import PeerName, RequestReceived, Respond, TransportEvent
from worker.wire import messages as wire
from worker.wire.frames import Frame, FrameBuffer, FrameError, Kind, Truncated, encode_frame

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
    answers: tuple[trio.MemorySendChannel[bytes], trio.MemoryReceiveChannel[bytes]]
    closed: bool = False
    queued: int = 0  # answer frames waiting for the writer
    writing: bool = False  # the writer is putting some on the socket


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
            trio.open_memory_channel[bytes](self._inflight),
        )
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_answers, conn, nursery.cancel_scope)
                await self._read_requests(peer, conn, buffer)
                nursery.cancel_scope.cancel()
        finally:
            conn.closed = True

    async def _read_requests(self, peer: PeerName, conn: _Inbound, buffer: FrameBuffer) -> None:
        slots = conn.slots
        try:
            while True:
                try:  # at most max_inflight_per_peer unanswered
                    slots.acquire_nowait()
                except trio.WouldBlock:
                    await slots.acquire()
                frame = await read_frame(conn.stream, buffer, deadlines=self._deadlines)
                self.watermarks.note("inbound_buffer_bytes", buffer.buffered)
                if not isinstance(frame, Frame):
                    return
                if frame.kind != KIND_REQUEST:
                    self.rejections["unknown_request_id"] += 1  # we asked nothing on this link
                    slots.release()
                    continue
                self.watermarks.note("inbound_inflight", self._inflight - slots.value)
                respond = self._responder(conn, frame.request_id)
                await self._emit(RequestReceived(peer, frame.payload, respond))
        except (Truncated, *STREAM_ERRORS):
            pass
        except FrameError as exc:
            self.rejections[exc.reason] += 1

    async def _write_answers(self, conn: _Inbound, scope: trio.CancelScope) -> None:
        """This connection's queued answers, each within the write deadline, or the link
        closes. Answers queued together go out in one write."""
        reason = ""
        answers = conn.answers[1]
        async for first in answers:
            batch = [first]
            size = len(first)
            while len(batch) < MAX_IOV and size < COALESCE_BYTES:
                try:
                    batch.append(answer := answers.receive_nowait())
                except trio.WouldBlock:
                    break
                size += len(answer)
            conn.queued -= len(batch)
            conn.writing = True
            try:
                await send_parts(conn.stream, [b"".join(batch)], self._write_timeout)
            except trio.TooSlowError:
                reason = "write_timeout"
            except STREAM_ERRORS:
                reason = "respond_failed"
            conn.writing = False
            if reason:
                self._fail(conn, reason)
                scope.cancel()
                return
            for _ in batch:
                conn.slots.release()

    def _fail(self, conn: _Inbound, reason: str) -> None:
        self.rejections[reason] += 1
        conn.closed = True
        close_stream(conn.stream)  # the reader sees it and ends the connection

    def _responder(self, conn: _Inbound, request_id: int) -> Respond:
        answered = False

        async def respond(data: bytes) -> None:
            """Never waits: written at once if the socket takes it and nothing is queued
            before it, else queued for the connection's writer."""
            nonlocal answered
            if answered or conn.closed or len(data) > self._max_payload:
                self.rejections["respond_failed"] += 1  # answered twice, or the link is gone
                return
            answered = True
            answer = encode_frame(KIND_RESPONSE, request_id, data)
            alone = self._inflight - conn.slots.value == 1  # no other answer due soon
            if alone and not conn.queued and not conn.writing:
                try:
                    sent = os.write(conn.stream.socket.fileno(), answer)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self._fail(conn, "respond_failed")
                    return
                if sent == len(answer):
                    conn.slots.release()
                    return
                answer = answer[sent:]  # the rest goes first, through the writer
            try:
                conn.answers[0].send_nowait(answer)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                self.rejections["respond_failed"] += 1  # the link is gone
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

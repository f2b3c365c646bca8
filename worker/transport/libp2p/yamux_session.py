"""A Yamux session (hashicorp/yamux spec.md, libp2p's `/yamux/1.0.0`), sans-IO.

No sockets and no trio here: the caller feeds the bytes that arrived
(`receive_data`, which returns events), calls the stream operations, and sends whatever
`data_to_send()` returns, in that order, on the (encrypted) connection.

The wire is the spec's: 12-byte headers `u8 version (0) | u8 type | u16 flags | u32 stream
id | u32 length`; types DATA, WINDOW_UPDATE, PING, GO_AWAY; flags SYN, ACK, FIN, RST;
odd stream ids for the dialer, even for the listener; every stream starts with a
256 KiB window each way. On top of that, this session:

- **grants a large receive window up front** (`window`, 16 MiB by default, the most
  go-yamux auto-tunes to): the SYN or ACK that opens a stream carries the increment, and
  a window update follows once half of it has been read. Few updates, no stalls.
- **honours the peer's windows**: `send` frames only what the peer's window allows
  (stock py-libp2p grants 256 KiB and grows it as it reads);
- **enforces its own**: a DATA frame longer than what the stream may still receive, or
  unread data beyond `max_buffered` on the whole connection, is a `YamuxProtocolError`
  (reason `receive_window_exceeded`) judged from the header, before the body is kept;
  as are a bad version or type, a duplicate SYN and a SYN with our parity;
- answers pings (ACK with the same opaque value), refuses streams beyond
  `max_inbound_streams` (RST, as go-yamux's accept backlog does), and discards frames
  for streams it no longer knows (reset or finished): a peer may still have data in
  flight for a stream we reset, and none of it is kept.

A data frame's body is delivered to its stream as it arrives (a large frame is never
assembled twice); a large payload piece we send is never copied, nor is a large body
piece we receive in an immutable message (`bytes` from Noise, a read-only view from
the TLS record layer): the stream keeps the message, or a read-only view of it.
"""

from __future__ import annotations

import struct
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from worker.errors import Refused

HEADER = struct.Struct(">BBHII")
HEADER_SIZE = HEADER.size
VERSION = 0
DATA, WINDOW_UPDATE, PING, GO_AWAY = 0, 1, 2, 3
SYN, ACK, FIN, RST = 1, 2, 4, 8
GO_AWAY_NORMAL, GO_AWAY_PROTOCOL_ERROR, GO_AWAY_INTERNAL_ERROR = 0, 1, 2
#: Every stream's window, each way, before any update (spec).
INITIAL_WINDOW = 256 * 1024
#: What we let a peer send on a stream before it hears from us again.
DEFAULT_WINDOW = 16 * 1024 * 1024
#: Largest DATA frame payload we send (the peer's window permitting). A batch goes as one
#: frame: one header, where 64 KiB frames (go-yamux's) would need a header, and so a
#: Noise message to seal and open, per 64 KiB. Every receiver here takes frames up to
#: its window (go-yamux, stock py-libp2p, js-libp2p: docs/libp2p-protocol.md).
MAX_FRAME = 1024 * 1024
#: Payload pieces from this size on are queued by reference, not copied (see `send`).
BY_REFERENCE = 4096
MAX_INBOUND_STREAMS = 256
MAX_STREAM_ID = 2**32 - 1
Buffer = bytes | bytearray | memoryview


class YamuxProtocolError(Refused):
    """The peer broke the protocol: the connection must end (GO_AWAY protocol error)."""

    source = "transport"


class StreamUnusable(Exception):
    """A local operation on a stream that is reset, finished, or closed for sending."""


@dataclass(eq=False, slots=True)
class StreamState:
    """One stream, as the session keeps it. `owner` is the caller's (never read here)."""

    id: int
    send_window: int = INITIAL_WINDOW  # what the peer still lets us send
    recv_credit: int = INITIAL_WINDOW  # what the peer may still send us
    #: received, not yet read: `bytes`, or read-only views (large bodies: see `_receive`)
    chunks: deque[Buffer] = field(default_factory=deque)
    buffered: int = 0  # their total size
    unreleased: int = 0  # read but not yet given back to the peer as window
    local_closed: bool = False  # we sent FIN
    remote_closed: bool = False  # we received FIN
    reset: bool = False
    owner: Any = None

    @property
    def done(self) -> bool:
        """Nothing more can happen on it: reset, or finished both ways and drained."""
        return self.reset or (self.local_closed and self.remote_closed and not self.buffered)


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened a stream (already acknowledged, window granted)."""

    stream: StreamState


@dataclass(frozen=True, slots=True)
class DataReceived:
    """More data for the stream (at most one event per stream and `receive_data` or
    `receive_messages` call, unless frames of several streams interleave)."""

    stream: StreamState


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer closed its side (FIN): what is buffered is all there will be."""

    stream: StreamState


@dataclass(frozen=True, slots=True)
class StreamReset:
    stream: StreamState


@dataclass(frozen=True, slots=True)
class WindowUpdated:
    """The peer let us send more on this stream."""

    stream: StreamState


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    code: int


Event = StreamOpened | DataReceived | StreamEnded | StreamReset | WindowUpdated | GoAwayReceived


def encode_header(kind: int, flags: int, stream_id: int, length: int) -> bytes:
    return HEADER.pack(VERSION, kind, flags, stream_id, length)


class YamuxSession:
    """One connection's Yamux state: its streams, their windows, the bytes to send."""

    def __init__(
        self,
        is_initiator: bool,
        *,
        window: int = DEFAULT_WINDOW,
        max_buffered: int | None = None,
        max_inbound_streams: int = MAX_INBOUND_STREAMS,
        max_frame: int = MAX_FRAME,
    ) -> None:
        if window < INITIAL_WINDOW:
            raise ValueError("the receive window cannot be below the spec's initial window")
        self.window = window
        #: Unread data on all streams together beyond which the peer is refused.
        self.max_buffered = window + max_frame if max_buffered is None else max_buffered
        self.max_inbound_streams = max_inbound_streams
        self.max_frame = max_frame
        self.streams: dict[int, StreamState] = {}
        #: Unread bytes in all stream buffers.
        self.buffered = 0
        self.going_away = False  # we sent GO_AWAY: no new streams either way
        self.remote_going_away = False
        self._next_id = 1 if is_initiator else 2
        self._peer_parity = 0 if is_initiator else 1
        self._inbound = 0  # live streams the peer opened
        self._out: list[Buffer] = []  # queued segments, in order
        self._small = bytearray()  # headers and small payloads, copied together
        # receive side: a header being completed, or the body of a DATA frame
        self._head = bytearray()
        self._body_left = 0
        self._body_stream: StreamState | None = None  # None: discard the body
        self._body_flags = 0

    # -- sending ------------------------------------------------------------------------
    def data_to_send(self) -> list[Buffer]:
        """Everything queued so far, as segments to send in order (small frames copied
        together, large payload pieces by reference to the caller's buffer)."""
        if self._small:
            self._out.append(self._small)
            self._small = bytearray()
        out, self._out = self._out, []
        return out

    @property
    def has_data_to_send(self) -> bool:
        return bool(self._out or self._small)

    def _frame(self, kind: int, flags: int, stream_id: int, length: int) -> None:
        self._small += HEADER.pack(VERSION, kind, flags, stream_id, length)

    # -- stream operations ----------------------------------------------------------------
    def open_stream(self) -> StreamState:
        """A new outbound stream; its SYN (with our window increment) is queued."""
        if self.going_away or self.remote_going_away:
            raise StreamUnusable("the session is going away")
        stream_id = self._next_id
        if stream_id > MAX_STREAM_ID:
            raise StreamUnusable("stream ids exhausted")
        self._next_id += 2
        stream = StreamState(stream_id, recv_credit=self.window)
        self.streams[stream_id] = stream
        self._frame(WINDOW_UPDATE, SYN, stream_id, self.window - INITIAL_WINDOW)
        return stream

    def send(self, stream: StreamState, data: Buffer) -> int:
        """Queue DATA frames for as much of `data` as the peer's window allows; returns how
        many bytes that was (0 when the window is shut: wait for `WindowUpdated`).

        Pieces of at least BY_REFERENCE bytes are queued by reference: `data` must stay
        unchanged until `data_to_send()` has been sent."""
        if stream.reset or stream.local_closed:
            raise StreamUnusable("stream reset" if stream.reset else "stream closed for sending")
        view = memoryview(data)
        total = min(len(view), stream.send_window)
        if total <= 0:
            return 0
        step, pack = self.max_frame, HEADER.pack
        for start in range(0, total, step):
            piece = view[start : min(start + step, total)]
            self._small += pack(VERSION, DATA, 0, stream.id, len(piece))
            if len(piece) < BY_REFERENCE:
                self._small += piece
            else:
                self._out.append(self._small)
                self._out.append(piece)
                self._small = bytearray()
        stream.send_window -= total
        return total

    def read(self, stream: StreamState, max_bytes: int | None = None) -> bytes:
        """Up to `max_bytes` (default: all) unread bytes as one object; b"" when none."""
        chunks = stream.chunks
        if not chunks:
            return b""
        if max_bytes is None or max_bytes >= stream.buffered:
            data = b"".join(chunks)  # one `bytes` chunk: itself, no copy
            chunks.clear()
        else:
            parts, want = [], max_bytes
            while want:
                chunk = chunks.popleft()
                if len(chunk) > want:
                    chunks.appendleft(chunk[want:])
                    chunk = chunk[:want]
                parts.append(chunk)
                want -= len(chunk)
            data = b"".join(parts)
        self._consumed(stream, len(data))
        return data

    def read_chunks(self, stream: StreamState) -> list[Buffer]:
        """Every unread chunk as it arrived (no copy: `bytes`, or read-only views of
        memory that never changes); [] when none."""
        chunks = list(stream.chunks)
        stream.chunks.clear()
        self._consumed(stream, sum(len(c) for c in chunks))
        return chunks

    def _consumed(self, stream: StreamState, n: int) -> None:
        """`n` bytes were read: given back to the peer as window once half of it is."""
        stream.buffered -= n
        self.buffered -= n
        stream.unreleased += n
        if stream.unreleased >= self.window // 2 and not (stream.remote_closed or stream.reset):
            self._frame(WINDOW_UPDATE, 0, stream.id, stream.unreleased)
            stream.recv_credit += stream.unreleased
            stream.unreleased = 0
        self._forget_if_done(stream)

    def close(self, stream: StreamState) -> None:
        """Half-close: FIN (we send no more; the peer's data still arrives)."""
        if stream.reset or stream.local_closed:
            return
        stream.local_closed = True
        self._frame(WINDOW_UPDATE, FIN, stream.id, 0)
        self._forget_if_done(stream)

    def reset(self, stream: StreamState) -> None:
        """RST: both directions end now; what was buffered is dropped."""
        if stream.reset:
            return
        if not stream.done:
            self._frame(WINDOW_UPDATE, RST, stream.id, 0)
        self._drop(stream)

    def go_away(self, code: int = GO_AWAY_NORMAL) -> None:
        if not self.going_away:
            self.going_away = True
            self._frame(GO_AWAY, 0, 0, code)

    def connection_lost(self) -> list[StreamState]:
        """The connection is gone (nothing is sent): a stream the peer had finished keeps
        what it buffered (read to the end, then EOF); every other stream is reset."""
        streams = list(self.streams.values())
        self.going_away = True
        for stream in streams:
            if stream.remote_closed and stream.buffered:
                stream.local_closed = True
            else:
                self._drop(stream)
        return streams

    # -- receiving ------------------------------------------------------------------------
    def receive_data(self, data: Buffer) -> list[Event]:
        """Process bytes from the peer (any split); raises `YamuxProtocolError`. When
        `data` is `bytes` or a read-only view, its memory must never change: a DATA body
        that is all of it, or a large piece that is at least half of it, is kept by
        reference, not copied."""
        events: list[Event] = []
        self._receive(data, events, None)
        return events

    def receive_messages(self, messages: list[bytes]) -> list[Event]:
        """`receive_data` of each message in turn, with one DataReceived for a stream's
        run of bodies: its reader is woken once per socket read, not once per message."""
        events: list[Event] = []
        told: StreamState | None = None
        for data in messages:
            told = self._receive(data, events, told)
        return events

    def _receive(
        self, data: Buffer, events: list[Event], told: StreamState | None
    ) -> StreamState | None:
        """Append `data`'s events; `told` is the stream last given a DataReceived."""
        view = memoryview(data)
        pos, end = 0, len(view)
        # `bytes`, or a read-only view whose memory never changes (the TLS record layer's)
        immutable = type(data) is bytes or view.readonly
        while pos < end:
            if self._body_left:
                n = min(self._body_left, end - pos)
                self._body_left -= n
                stream = self._body_stream
                if stream is not None:
                    if stream is not told:
                        events.append(DataReceived(stream))
                        told = stream
                    if immutable and n == end:  # a message of its own
                        chunk: Buffer = data
                    elif immutable and n >= BY_REFERENCE and 2 * n >= end:
                        # `data` never changes: a view, which pins all of `data`; only for
                        # a piece of at least half of it, so unread data never holds more
                        # than twice its size (a peer's small bodies cannot pin big reads)
                        chunk = view[pos : pos + n]
                    else:
                        chunk = bytes(view[pos : pos + n])
                    stream.chunks.append(chunk)
                    stream.buffered += n
                    self.buffered += n
                    if not self._body_left:
                        self._body_stream = None
                        if self._body_flags:
                            self._stream_flags(stream, self._body_flags, events)
                pos += n
                continue
            if self._head or end - pos < HEADER_SIZE:
                need = HEADER_SIZE - len(self._head)
                self._head += view[pos : pos + need]
                pos += min(need, end - pos)
                if len(self._head) < HEADER_SIZE:
                    break
                version, kind, flags, stream_id, length = HEADER.unpack(self._head)
                self._head.clear()
            else:
                version, kind, flags, stream_id, length = HEADER.unpack_from(view, pos)
                pos += HEADER_SIZE
            if version != VERSION:
                raise YamuxProtocolError("yamux_protocol_error", f"version {version}")
            self._on_header(kind, flags, stream_id, length, events)
        return told

    def _on_header(
        self, kind: int, flags: int, stream_id: int, length: int, events: list[Event]
    ) -> None:
        if kind in (DATA, WINDOW_UPDATE):
            stream = self.streams.get(stream_id)
            if flags & SYN:
                stream = self._incoming(stream_id, stream, events)
            if kind == DATA:
                self._on_data(stream, flags, length, events)
            elif stream is not None:
                if length:
                    stream.send_window += length
                    events.append(WindowUpdated(stream))
                self._stream_flags(stream, flags, events)
        elif kind == PING:
            if flags & SYN:  # answered; we send no pings, so an ACK needs nothing
                self._frame(PING, ACK, 0, length)
        elif kind == GO_AWAY:
            self.remote_going_away = True
            events.append(GoAwayReceived(length))
        else:
            raise YamuxProtocolError("yamux_protocol_error", f"frame type {kind}")

    def _on_data(
        self, stream: StreamState | None, flags: int, length: int, events: list[Event]
    ) -> None:
        if stream is not None and not flags & RST and not stream.remote_closed:
            if length > stream.recv_credit:
                raise YamuxProtocolError(
                    "receive_window_exceeded",
                    f"stream {stream.id}: {length} bytes, window {stream.recv_credit}",
                )
            if self.buffered + length > self.max_buffered:
                raise YamuxProtocolError(
                    "receive_window_exceeded", f"{self.buffered + length} bytes unread"
                )
            stream.recv_credit -= length
            if length:
                self._body_left, self._body_stream, self._body_flags = length, stream, flags
                return
        elif stream is not None and stream.remote_closed and not flags & RST and length:
            self.reset(stream)  # data after its FIN: the stream is broken, not the session
            events.append(StreamReset(stream))
            stream = None
        self._body_left, self._body_stream = length, None  # unknown stream: discard
        if stream is not None:
            self._stream_flags(stream, flags, events)

    def _incoming(
        self, stream_id: int, existing: StreamState | None, events: list[Event]
    ) -> StreamState | None:
        """A SYN: a new stream of the peer's, acknowledged with our window increment."""
        if existing is not None:
            raise YamuxProtocolError("yamux_protocol_error", f"duplicate stream {stream_id}")
        if stream_id == 0 or stream_id % 2 != self._peer_parity:
            raise YamuxProtocolError("yamux_protocol_error", f"SYN for stream {stream_id}")
        if self.going_away or self._inbound >= self.max_inbound_streams:
            self._frame(WINDOW_UPDATE, RST, stream_id, 0)
            return None
        stream = StreamState(stream_id, recv_credit=self.window)
        self.streams[stream_id] = stream
        self._inbound += 1
        self._frame(WINDOW_UPDATE, ACK, stream_id, self.window - INITIAL_WINDOW)
        events.append(StreamOpened(stream))
        return stream

    def _stream_flags(self, stream: StreamState, flags: int, events: list[Event]) -> None:
        if flags & RST:
            if not stream.reset:
                self._drop(stream)
                events.append(StreamReset(stream))
        elif flags & FIN and not stream.remote_closed:
            stream.remote_closed = True
            events.append(StreamEnded(stream))
            self._forget_if_done(stream)

    # -- bookkeeping ----------------------------------------------------------------------
    def _drop(self, stream: StreamState) -> None:
        stream.reset = True
        self.buffered -= stream.buffered
        stream.chunks.clear()
        stream.buffered = 0
        if self._body_stream is stream:
            self._body_stream = None
        self._forget(stream)

    def _forget_if_done(self, stream: StreamState) -> None:
        if stream.done:
            self._forget(stream)

    def _forget(self, stream: StreamState) -> None:
        if self.streams.pop(stream.id, None) is not None and stream.id % 2 == self._peer_parity:
            self._inbound -= 1

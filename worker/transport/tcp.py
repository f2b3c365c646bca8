"""Plain TCP baseline transport: one persistent, pipelined connection per peer and direction.

Framing (every frame, both directions, big-endian)::

    u32 length | u8 kind | u64 request_id | payload
    length = 9 + len(payload)      (it counts everything after itself)
    kind   = 0 request, 1 response

`length - 9` may not exceed `params.max_message_size`; anything larger is refused before
any of it is buffered ("oversized") and the connection is closed.

Connections are one-way for requests: we dial each peer lazily on our first request to it
and carry our requests and its responses on that connection; the peer's requests arrive
on connections it dialed to our listener, and we answer on those. Requests are pipelined:
any number can be outstanding, and responses (possibly out of order) are matched by
request id, which must be unique among the requests outstanding to one peer.

The first frame on a new connection is a request frame with request_id 0 whose payload is
`wire.encode(wire.Hello(authority=<raw 32-byte key>, worker_id=...))`. It is unauthenticated
(this is the baseline that the libp2p transport is compared against): a listener only
checks that it names another committee authority that has a worker with our id.

Refused inbound traffic is counted in `rejections` by reason: "oversized",
"malformed_frame" (short frame, unknown kind, a request where only responses may come),
"unknown_request_id", "unknown_peer", "bad_hello" (also: no Hello within
`request_timeout`), and "respond_failed" (a response for a connection that is gone, or
over the size limit: dropped, never raised).
Any framing error closes that connection; an unknown response id is only counted.
Before the Hello, frames are limited to MAX_HELLO_PAYLOAD bytes.

A failed peer never raises out of the transport: its requests become `RequestFailed`.
When a dial fails, the request that triggered it and every request already queued for
that peer fail with it (so a dead peer costs one dial, not one per request); when a
connection breaks, every request outstanding on it fails. Nothing is retried here: the
caller retries, and its next request redials.
"""

from __future__ import annotations

import contextlib
import math
import struct
from collections import Counter
from dataclasses import dataclass, field
from functools import partial

import trio

from worker.config import Committee, Parameters, WorkerAddresses
from worker.keys import decode_public_key
from worker.transport.base import (
    PeerName,
    RequestFailed,
    RequestReceived,
    Respond,
    ResponseReceived,
    SendRequest,
    TransportEvent,
)
from worker.wire import messages as wire

KIND_REQUEST = 0
KIND_RESPONSE = 1
HELLO_REQUEST_ID = 0
HEADER = struct.Struct(">IBQ")  # length, kind, request_id
_LENGTH = struct.Struct(">I")
_HEADER_AFTER_LENGTH = HEADER.size - _LENGTH.size  # kind + request_id: 9 bytes
MAX_REQUEST_ID = 2**64 - 1
#: Hellos are tiny; an unauthenticated dialer must not make us buffer megabytes.
MAX_HELLO_PAYLOAD = 256
#: Events buffered for the router before reader tasks stop reading (TCP back-pressure).
EVENT_BUFFER = 10_000
#: Bytes asked of the socket per buffered read; below malloc's mmap threshold.
_CHUNK = 64 * 1024
#: Payloads up to this size are written with their header in one send.
_COALESCE = 64 * 1024

_STREAM_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class FrameError(Exception):
    """Inbound bytes that cannot be framed; `reason` is the rejection counter label."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FrameReader:
    """Reads whole frames off a socket stream, buffered, without per-byte work.

    Small frames are cut out of a shared read buffer; the rest of a large payload is read
    with `recv_into` straight into its own buffer, so a multi-megabyte frame costs one
    allocation and one final copy rather than a chain of re-allocations.
    """

    def __init__(self, stream: trio.SocketStream, max_payload: int) -> None:
        self._stream = stream
        self._buf = bytearray()
        self.max_payload = max_payload

    async def _fill(self, n: int) -> bool:
        """Buffer at least n bytes; False on a clean end of stream before any byte."""
        while len(self._buf) < n:
            chunk = await self._stream.receive_some(_CHUNK)
            if not chunk:
                if self._buf:
                    raise trio.BrokenResourceError("stream ended inside a frame")
                return False
            self._buf += chunk
        return True

    async def read(self) -> tuple[int, int, bytes] | None:
        """The next (kind, request_id, payload), or None at a clean end of stream."""
        if not await self._fill(_LENGTH.size):
            return None
        (length,) = _LENGTH.unpack_from(self._buf)
        if length < _HEADER_AFTER_LENGTH:
            raise FrameError("malformed_frame")
        size = length - _HEADER_AFTER_LENGTH
        if size > self.max_payload:
            raise FrameError("oversized")
        await self._fill(HEADER.size)
        _, kind, request_id = HEADER.unpack_from(self._buf)
        if kind not in (KIND_REQUEST, KIND_RESPONSE):
            raise FrameError("malformed_frame")
        end = HEADER.size + size
        if len(self._buf) < end and size > _COALESCE:
            return kind, request_id, await self._read_large(size)
        await self._fill(end)
        payload = bytes(self._buf[HEADER.size : end])
        del self._buf[:end]
        return kind, request_id, payload

    async def _read_large(self, size: int) -> bytes:
        out = bytearray(size)
        have = len(self._buf) - HEADER.size
        out[:have] = memoryview(self._buf)[HEADER.size :]
        self._buf.clear()
        view = memoryview(out)
        sock = self._stream.socket
        while have < size:
            n = await sock.recv_into(view[have:])
            if n == 0:
                raise trio.BrokenResourceError("stream ended inside a frame")
            have += n
        view.release()
        return bytes(out)


async def write_frame(
    stream: trio.SocketStream, kind: int, request_id: int, payload: bytes
) -> None:
    header = HEADER.pack(_HEADER_AFTER_LENGTH + len(payload), kind, request_id)
    if len(payload) <= _COALESCE:
        await stream.send_all(header + payload)
    else:  # skip copying a large payload just to prepend 13 bytes
        await stream.send_all(header)
        await stream.send_all(payload)


def _close(stream: trio.SocketStream) -> None:
    """Close synchronously (works while cancelled); wakes any task blocked on the socket."""
    stream.socket.close()


@dataclass(eq=False)
class _Outbound:
    """Our connection to a peer: our requests out, its responses back."""

    stream: trio.SocketStream
    outstanding: set[int] = field(default_factory=set)
    alive: bool = True


@dataclass(eq=False)
class _Inbound:
    """A peer's connection to us: its requests in, our responses out."""

    stream: trio.SocketStream
    lock: trio.Lock = field(default_factory=trio.Lock)
    closed: bool = False


class TcpTransport:
    """The plain TCP baseline; see the module docstring for the wire format."""

    def __init__(
        self,
        committee: Committee,
        me: str,
        worker_id: int,
        params: Parameters,
        bind_host: str | None = None,
    ) -> None:
        self.me = me
        self.worker_id = worker_id
        self.rejections: Counter[str] = Counter()
        self._host, self._port = committee.worker(me, worker_id).worker_hostport
        if bind_host is not None:
            self._host = bind_host
        self._max_payload = params.max_message_size
        self._timeout = params.request_timeout / 1000
        self._peers: dict[PeerName, WorkerAddresses] = dict(committee.peer_workers(me, worker_id))
        self._names_by_key = {decode_public_key(name): name for name in self._peers}
        self._hello = wire.encode(wire.Hello(decode_public_key(me), worker_id))
        self._events_send, self.events = trio.open_memory_channel[TransportEvent](EVENT_BUFFER)
        # Unbounded: `send` must never block; the caller bounds in-flight requests.
        self._queues = {
            peer: trio.open_memory_channel[SendRequest](math.inf) for peer in self._peers
        }
        self._local_send, self._local_recv = trio.open_memory_channel[RequestFailed](math.inf)
        self._outbound: dict[PeerName, _Outbound] = {}
        self._streams: set[trio.SocketStream] = set()
        self._nursery: trio.Nursery | None = None
        self._served = False

    # -- Transport interface ----------------------------------------------------------
    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and run until cancelled; every socket is closed on the way out."""
        if self._served:
            raise RuntimeError("a TcpTransport serves once; build a new one to restart")
        self._served = True
        listeners = await trio.open_tcp_listeners(self._port, host=self._host)
        port = listeners[0].socket.getsockname()[1]
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._forward_local_failures)
                for peer, addrs in self._peers.items():
                    nursery.start_soon(self._write_requests, peer, addrs)
                await nursery.start(
                    partial(trio.serve_listeners, handler_nursery=nursery),
                    self._serve_inbound,
                    listeners,
                )
                task_status.started(f"{self._host}:{port}")
        finally:
            self._nursery = None
            for listener in listeners:
                listener.socket.close()
            for stream in list(self._streams):
                _close(stream)
            self._streams.clear()
            for conn in self._outbound.values():
                conn.alive = False
            self._outbound.clear()

    def send(self, request: SendRequest) -> None:
        """Queue a request for the peer's writer task; refusals come back as events."""
        queue = self._queues.get(request.target)
        if queue is None:
            self._fail_locally(request, "unknown peer")
        elif not 0 <= request.request_id <= MAX_REQUEST_ID:
            self._fail_locally(request, "request id out of range")
        elif len(request.data) > self._max_payload:
            self._fail_locally(request, "request larger than max_message_size")
        else:
            queue[0].send_nowait(request)

    def connected_peers(self) -> set[PeerName]:
        return {peer for peer, conn in self._outbound.items() if conn.alive}

    # -- events ---------------------------------------------------------------------------
    async def _emit(self, event: TransportEvent) -> None:
        # If nobody listens any more there is nothing to report to.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await self._events_send.send(event)

    def _fail_locally(self, request: SendRequest, error: str) -> None:
        # `send` is synchronous and `events` is bounded, so these go via a forwarder task.
        self._local_send.send_nowait(RequestFailed(request.request_id, request.target, error))

    async def _forward_local_failures(self) -> None:
        async for event in self._local_recv:
            await self._emit(event)

    # -- outbound: our requests, their responses ---------------------------------------
    async def _write_requests(self, peer: PeerName, addrs: WorkerAddresses) -> None:
        """Drain one peer's queue onto its connection, dialing whenever there is none."""
        queue = self._queues[peer][1]
        async for request in queue:
            conn = self._outbound.get(peer)
            if conn is None:
                dialed = await self._dial(peer, addrs)
                if isinstance(dialed, str):
                    # Fail what is queued too: one dead peer must not cost a dial per request.
                    await self._emit(RequestFailed(request.request_id, peer, dialed))
                    while True:
                        try:
                            queued = queue.receive_nowait()
                        except trio.WouldBlock:
                            break
                        await self._emit(RequestFailed(queued.request_id, peer, dialed))
                    continue
                conn = dialed
            # Registered before writing: the response may arrive before send_all returns.
            conn.outstanding.add(request.request_id)
            try:
                await write_frame(conn.stream, KIND_REQUEST, request.request_id, request.data)
            except _STREAM_ERRORS as exc:
                await self._drop_outbound(peer, conn, f"connection lost: {exc!r}")

    async def _dial(self, peer: PeerName, addrs: WorkerAddresses) -> _Outbound | str:
        """A connected, introduced link to the peer, or the error that prevented it."""
        assert self._nursery is not None
        host, port = addrs.worker_hostport
        stream: trio.SocketStream | None = None
        try:
            with trio.fail_after(self._timeout):
                stream = await trio.open_tcp_stream(host, port)
                stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, True)
                await write_frame(stream, KIND_REQUEST, HELLO_REQUEST_ID, self._hello)
        except (trio.TooSlowError, *_STREAM_ERRORS) as exc:
            if stream is not None:
                _close(stream)
            return f"cannot connect to {host}:{port}: {exc!r}"
        conn = _Outbound(stream)
        self._outbound[peer] = conn
        self._streams.add(stream)
        self._nursery.start_soon(self._read_responses, peer, conn)
        return conn

    async def _read_responses(self, peer: PeerName, conn: _Outbound) -> None:
        reader = FrameReader(conn.stream, self._max_payload)
        error = "connection closed by peer"
        try:
            while (frame := await reader.read()) is not None:
                kind, request_id, payload = frame
                if kind != KIND_RESPONSE:
                    self.rejections["malformed_frame"] += 1  # peers request on their own link
                elif request_id not in conn.outstanding:
                    self.rejections["unknown_request_id"] += 1
                else:
                    conn.outstanding.discard(request_id)
                    await self._emit(ResponseReceived(request_id, peer, payload))
        except FrameError as exc:
            self.rejections[exc.reason] += 1
            error = f"protocol error from peer: {exc.reason}"
        except _STREAM_ERRORS as exc:
            error = f"connection lost: {exc!r}"
        await self._drop_outbound(peer, conn, error)

    async def _drop_outbound(self, peer: PeerName, conn: _Outbound, error: str) -> None:
        """Close the link once and fail everything still waiting on it (no retries here)."""
        if not conn.alive:
            return
        conn.alive = False
        if self._outbound.get(peer) is conn:
            del self._outbound[peer]
        _close(conn.stream)
        self._streams.discard(conn.stream)
        failed, conn.outstanding = conn.outstanding, set()
        for request_id in sorted(failed):
            await self._emit(RequestFailed(request_id, peer, error))

    # -- inbound: their requests, our responses ----------------------------------------
    async def _serve_inbound(self, stream: trio.SocketStream) -> None:
        stream.setsockopt(trio.socket.IPPROTO_TCP, trio.socket.TCP_NODELAY, True)
        self._streams.add(stream)
        conn = _Inbound(stream)
        reader = FrameReader(stream, MAX_HELLO_PAYLOAD)
        try:
            peer = await self._read_hello(reader)
            if peer is None:
                return
            reader.max_payload = self._max_payload
            while (frame := await reader.read()) is not None:
                kind, request_id, payload = frame
                if kind != KIND_REQUEST:
                    self.rejections["unknown_request_id"] += 1  # we asked nothing on this link
                    continue
                respond = self._responder(conn, request_id)
                await self._emit(RequestReceived(peer, payload, respond))
        except FrameError as exc:
            self.rejections[exc.reason] += 1
        except _STREAM_ERRORS:
            pass
        finally:
            conn.closed = True
            _close(stream)
            self._streams.discard(stream)

    async def _read_hello(self, reader: FrameReader) -> PeerName | None:
        """The committee name the dialer introduces itself as, or None (counted)."""
        frame = None
        with trio.move_on_after(self._timeout):
            frame = await reader.read()
            if frame is None:
                return None  # closed without a word: nothing was refused
        if frame is None:
            self.rejections["bad_hello"] += 1  # silent past the timeout
            return None
        kind, request_id, payload = frame
        try:
            hello = wire.decode(payload, MAX_HELLO_PAYLOAD)
        except wire.WireError:
            hello = None
        if (
            kind != KIND_REQUEST
            or request_id != HELLO_REQUEST_ID
            or not isinstance(hello, wire.Hello)
        ):
            self.rejections["bad_hello"] += 1
            return None
        name = self._names_by_key.get(hello.authority)
        if name is None or hello.worker_id != self.worker_id:
            self.rejections["unknown_peer"] += 1
            return None
        return name

    def _responder(self, conn: _Inbound, request_id: int) -> Respond:
        async def respond(data: bytes) -> None:
            if conn.closed or len(data) > self._max_payload:
                self.rejections["respond_failed"] += 1
                return
            async with conn.lock:
                if conn.closed:
                    self.rejections["respond_failed"] += 1
                    return
                done = False
                try:
                    await write_frame(conn.stream, KIND_RESPONSE, request_id, data)
                    done = True
                except _STREAM_ERRORS:
                    self.rejections["respond_failed"] += 1
                finally:
                    if not done:  # failed or cancelled mid-frame: the stream is unusable
                        conn.closed = True
                        _close(conn.stream)

        return respond

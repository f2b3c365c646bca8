"""Plain TCP baseline transport: one persistent, pipelined connection per peer and direction.

Framing (every frame, both directions, big-endian)::

    u32 length | u8 kind | u64 request_id | payload
    length = 9 + len(payload)      (it counts everything after itself)
    kind   = 0 request, 1 response

(the tagged frames of worker/wire/frames.py, the codec the libp2p transport uses too).
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

Limits (worker/config.py, docs/guarantees.md): each peer's outbound queue holds at most
`max_queued_requests` (beyond: `RequestFailed("queue_full")` at once); every frame we
write must go out within `write_timeout`, or the connection is dropped and its requests
fail ("write_timeout"); a response frame must be finished within `frame_timeout`. The
listening side (worker/transport/tcp_inbound.py) answers through a bounded per-connection
queue with its own writer, caps requests in flight per connection and connections per
peer, and times out idle and trickling connections.

A failed peer never raises out of the transport: its requests become `RequestFailed`.
When a dial fails, the request that triggered it and every request already queued for
that peer fail with it (so a dead peer costs one dial, not one per request); when a
connection breaks, every request outstanding on it fails; one unanswered for
`request_timeout` fails with "timeout" (worker/core/requests.py, as on libp2p). Nothing is
retried here: the caller retries, and its next request redials. Hellos are counted in
`handshakes` ("accepted", "bad_hello", "unknown_peer").
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio

from worker.config import Committee, Parameters, WorkerAddresses
from worker.core.requests import RequestTable, expiry_period
from worker.keys import decode_public_key
from worker.streams import (
    COALESCE_BYTES,
    MAX_IOV,
    STREAM_ERRORS,
    Deadlines,
    frame_parts,
    read_frame,
    send_parts,
    write_frame,
)
from worker.transport.base import (
    PeerName,
    RequestFailed,
    ResponseReceived,
    SendRequest,
    Transport,
    TransportEvent,
)
from worker.transport.tcp_inbound import (
    HELLO_REQUEST_ID,
    KIND_REQUEST,
    KIND_RESPONSE,
    MAX_HELLO_PAYLOAD,
    InboundLinks,
    Watermarks,
    close_stream,
    frame_buffer,
)
from worker.wire import messages as wire
from worker.wire.frames import HEADER, LARGE_PAYLOAD, MAX_REQUEST_ID, Frame, FrameError, Truncated

__all__ = ["HEADER", "KIND_REQUEST", "KIND_RESPONSE", "MAX_HELLO_PAYLOAD", "TcpTransport"]
#: Events buffered for the dispatch before reader tasks stop reading (TCP back-pressure).
EVENT_BUFFER = 10_000


@dataclass(eq=False)
class _Outbound:
    """Our connection to a peer: our requests out, its responses back."""

    stream: trio.SocketStream
    outstanding: RequestTable[None]
    alive: bool = True


class TcpTransport(Transport):
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
        self.handshakes: Counter[str] = Counter()  # Hellos: "accepted" or why refused
        self.watermarks = Watermarks()
        self._host, self._port = committee.worker(me, worker_id).worker_hostport
        if bind_host is not None:
            self._host = bind_host
        self._max_payload = params.max_message_size
        self._timeout = params.request_timeout / 1000
        self._write_timeout = params.write_timeout / 1000
        self._response_deadlines = Deadlines(frame=params.frame_timeout / 1000)
        self._peers: dict[PeerName, WorkerAddresses] = dict(committee.peer_workers(me, worker_id))
        names_by_key = {decode_public_key(name): name for name in self._peers}
        self._hello = wire.encode(wire.Hello(decode_public_key(me), worker_id))
        self._events_send, self.events = trio.open_memory_channel[TransportEvent](EVENT_BUFFER)
        # Bounded, and `send` never blocks: beyond the bound a request fails at once.
        self._queues = {
            peer: trio.open_memory_channel[SendRequest](params.max_queued_requests)
            for peer in self._peers
        }
        self._local_send, self._local_recv = trio.open_memory_channel[RequestFailed](math.inf)
        self._outbound: dict[PeerName, _Outbound] = {}
        self._streams: set[trio.SocketStream] = set()
        self._sink: Callable[[TransportEvent], None] | None = None
        self._inbound = InboundLinks(
            params,
            worker_id,
            names_by_key,
            self._emit_read,
            self.rejections,
            self.handshakes,
            self.watermarks,
        )
        self._nursery: trio.Nursery | None = None
        self._expiry: trio.CancelScope | None = None  # the expiry task's sleep
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
                nursery.start_soon(self._expire)
                for peer, addrs in self._peers.items():
                    nursery.start_soon(self._write_requests, peer, addrs)
                await nursery.start(
                    partial(trio.serve_listeners, handler_nursery=nursery),
                    self._inbound.serve,
                    listeners,
                )
                task_status.started(f"{self._host}:{port}")
        finally:
            self._nursery = None
            for listener in listeners:
                listener.socket.close()
            for stream in [*self._streams, *self._inbound.streams]:
                close_stream(stream)
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
            try:
                queue[0].send_nowait(request)
            except trio.WouldBlock:
                self.rejections["queue_full"] += 1
                self._fail_locally(request, "queue_full")
            else:
                used = queue[0].statistics().current_buffer_used
                self.watermarks.note("outbound_queued", used)

    def connected_peers(self) -> set[PeerName]:
        return {peer for peer, conn in self._outbound.items() if conn.alive}

    def queued_requests(self) -> dict[PeerName, int]:
        """Requests waiting for each peer's writer (bounded by `max_queued_requests`)."""
        return {p: q[0].statistics().current_buffer_used for p, q in self._queues.items()}

    # -- events ---------------------------------------------------------------------------
    async def _emit(self, event: TransportEvent) -> None:
        # If nobody listens any more there is nothing to report to. Without a wait when
        # there is room (the caller's socket reads are its checkpoints).
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            try:
                self._events_send.send_nowait(event)
            except trio.WouldBlock:
                await self._events_send.send(event)

    async def _emit_read(self, event: TransportEvent) -> None:
        """A request or response, from the reader task that parsed it."""
        if self._sink is not None:
            self._sink(event)
        else:
            await self._emit(event)

    def deliver_inline(self, sink: Callable[[TransportEvent], None]) -> bool:
        self._sink = sink
        return True

    def _fail_locally(self, request: SendRequest, error: str) -> None:
        # `send` is synchronous and `events` is bounded, so these go via a forwarder task.
        self._local_send.send_nowait(RequestFailed(request.request_id, request.target, error))

    async def _forward_local_failures(self) -> None:
        async for event in self._local_recv:
            await self._emit(event)

    # -- outbound: our requests, their responses ---------------------------------------
    async def _write_requests(self, peer: PeerName, addrs: WorkerAddresses) -> None:
        """Drain one peer's queue onto its connection, dialing whenever there is none.
        Small requests queued together go out in one write (a large one ends the group)."""
        queue = self._queues[peer][1]
        async for request in queue:
            group = self._group(request, queue)
            conn = self._outbound.get(peer)
            if conn is None:
                dialed = await self._dial(peer, addrs)
                if isinstance(dialed, str):
                    # Fail what is queued too: one dead peer must not cost a dial per request.
                    for failed in group:
                        await self._emit(RequestFailed(failed.request_id, peer, dialed))
                    while True:
                        try:
                            queued = queue.receive_nowait()
                        except trio.WouldBlock:
                            break
                        await self._emit(RequestFailed(queued.request_id, peer, dialed))
                    continue
                conn = dialed
            frames = []
            now = trio.current_time()
            for r in group:
                # Registered before writing: the response may arrive before the write returns.
                if conn.outstanding.add(r.request_id, now, None):
                    frames.append((KIND_REQUEST, r.request_id, r.data))
                else:
                    await self._emit(RequestFailed(r.request_id, peer, "duplicate_request_id"))
            if not frames:
                continue
            if self._expiry is not None and self._expiry.deadline == math.inf:
                self._expiry.deadline = now + self._timeout + expiry_period(self._timeout)
            try:
                await send_parts(conn.stream, frame_parts(frames), self._write_timeout)
            except trio.TooSlowError:
                self.rejections["write_timeout"] += 1  # the peer stopped reading
                await self._drop_outbound(peer, conn, "write_timeout")
            except STREAM_ERRORS as exc:
                await self._drop_outbound(peer, conn, f"connection lost: {exc!r}")

    @staticmethod
    def _group(
        first: SendRequest, queue: trio.MemoryReceiveChannel[SendRequest]
    ) -> list[SendRequest]:
        """`first` and the requests queued behind it that can share its write."""
        group, size = [first], len(first.data)
        while size <= COALESCE_BYTES and len(group) < MAX_IOV // 2:
            if len(group[-1].data) > LARGE_PAYLOAD:
                break
            try:
                request = queue.receive_nowait()
            except trio.WouldBlock:
                break
            group.append(request)
            size += len(request.data)
        return group

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
        except (trio.TooSlowError, *STREAM_ERRORS) as exc:
            if stream is not None:
                close_stream(stream)
            return f"cannot connect to {host}:{port}: {exc!r}"
        conn = _Outbound(stream, RequestTable(self._timeout))
        self._outbound[peer] = conn
        self._streams.add(stream)
        self._nursery.start_soon(self._read_responses, peer, conn)
        return conn

    async def _read_responses(self, peer: PeerName, conn: _Outbound) -> None:
        buffer = frame_buffer(self._max_payload)
        error = "connection closed by peer"
        deadlines = self._response_deadlines
        try:
            while isinstance(
                frame := await read_frame(conn.stream, buffer, deadlines=deadlines), Frame
            ):
                if frame.kind != KIND_RESPONSE:
                    self.rejections["malformed_frame"] += 1  # peers request on their own link
                elif conn.outstanding.pop(frame.request_id) is None:
                    self.rejections["unknown_request_id"] += 1  # never asked, or timed out
                else:
                    await self._emit_read(ResponseReceived(frame.request_id, peer, frame.payload))
        except (Truncated, *STREAM_ERRORS) as exc:  # a hang-up, mid-frame or not
            error = f"connection lost: {exc!r}"
        except FrameError as exc:
            self.rejections[exc.reason] += 1
            error = f"protocol error from peer: {exc.reason}"
        await self._drop_outbound(peer, conn, error)

    async def _drop_outbound(self, peer: PeerName, conn: _Outbound, error: str) -> None:
        """Close the link once and fail everything still waiting on it (no retries here)."""
        if not conn.alive:
            return
        conn.alive = False
        if self._outbound.get(peer) is conn:
            del self._outbound[peer]
        close_stream(conn.stream)
        self._streams.discard(conn.stream)
        for request_id in sorted(conn.outstanding.take_all()):
            await self._emit(RequestFailed(request_id, peer, error))

    async def _expire(self) -> None:
        """Fail requests unanswered for `request_timeout` (the one policy of core/requests).
        Sleeps until the oldest outstanding request's deadline (give or take a tenth of
        the timeout), or for good while nothing is outstanding: an idle worker never
        wakes for it (`_write_requests` sets the first deadline)."""
        slack = expiry_period(self._timeout)
        while True:
            deadlines = [
                d for conn in self._outbound.values() if (d := conn.outstanding.next_deadline())
            ]
            with trio.CancelScope(deadline=min(deadlines) + slack if deadlines else math.inf) as s:
                self._expiry = s
                await trio.sleep_forever()
            self._expiry = None
            now = trio.current_time()
            for peer, conn in list(self._outbound.items()):
                for request_id in conn.outstanding.expire(now):
                    await self._emit(RequestFailed(request_id, peer, "timeout"))

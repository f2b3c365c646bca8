"""The batch protocol on one long-lived Yamux stream per peer and direction: our side.

Our requests travel on a stream we open to the peer; the peer answers on the same
stream, tagged with our request id, so requests pipeline without per-request stream
setup (see docs/libp2p-protocol.md). Readers never wait for the router: a reader that
stalls stops granting Yamux window, and the sender's writes then hit `write_timeout`.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Callable, Sequence

import trio
from libp2p.abc import INetStream

from worker.core.requests import RequestTable
from worker.streams import COALESCE_BYTES
from worker.transport.base import (
    PeerName,
    RequestFailed,
    ResponseReceived,
    SendRequest,
    TransportEvent,
)
from worker.transport.libp2p.framing import (
    Frame,
    FrameError,
    Kind,
    StreamClosed,
    lean_stream,
    read_frames,
    tagged_header,
    write_pieces,
)

GATHER_TICKS = 64
Emit = Callable[[TransportEvent], None]
Buffer = bytes | bytearray | memoryview


class FrameWriter:
    """Writes frames in order without blocking the caller: at once when the stream is
    idle and one of ours (a task hop less per frame), else queued and coalesced.

    Coalescing matters: every write is a send on the connection (and, with py-libp2p's
    own Yamux, a Noise message and a window update from the reader). Frames queued in
    the same scheduler tick are written together. Answers to a burst of requests, though,
    come from a router task that yields between answers; while `more_coming()` says
    answers are still owed, the writer lets the scheduler run until the queue stops
    growing (a few ticks, no timer), so a lone answer is written at once. A frame may be
    put as pieces (header, payload): they are written without being joined.
    """

    def __init__(self, more_coming: Callable[[], bool] | None = None) -> None:
        self._more_coming = more_coming
        self._queue: deque[tuple[tuple[Buffer, ...], int]] = deque()  # (pieces, size)
        self._queued_bytes = 0
        self._wake = trio.Event()
        self._progress = trio.Event()  # set (and replaced) on every put and every write
        self._writing = False
        #: While `run` writes to one of our own Yamux streams: its unyielding write.
        self._write_nowait: Callable[[Sequence[Buffer]], bool] | None = None
        self._closed = False

    def put(self, *pieces: Buffer) -> None:
        """Queue one frame, given whole or as consecutive pieces."""
        if not self._closed:
            if (
                self._write_nowait is not None
                and not self._queue
                and not self._writing
                and (self._more_coming is None or not self._more_coming())
                and self._write_nowait(pieces)
            ):
                return self._progressed()  # written at once: no trip through `run`
            size = sum(len(p) for p in pieces)
            self._queue.append((pieces, size))
            self._queued_bytes += size
            self._wake.set()
            self._progressed()

    async def drain(self, owed: Callable[[], bool]) -> None:
        """Return once nothing is owed (`owed()` is false), queued or being written."""
        while owed() or self._queue or self._writing:
            await self._progress.wait()

    def _progressed(self) -> None:
        self._progress.set()
        self._progress = trio.Event()

    def close(self) -> None:
        self._closed = True
        self._queue.clear()
        self._queued_bytes = 0
        self._wake.set()

    async def run(self, stream: INetStream, write_timeout: float = math.inf) -> None:
        """Write until closed; a write that fails, or takes longer than `write_timeout`
        (a peer that stopped reading), raises `StreamClosed`."""
        lean = lean_stream(stream)
        self._write_nowait = None if lean is None else lean.write_nowait
        try:
            await self._run(stream, write_timeout)
        finally:
            self._write_nowait = None

    async def _run(self, stream: INetStream, write_timeout: float) -> None:
        with trio.CancelScope() as deadline:  # one scope, its deadline set per write
            while not self._closed:
                if not self._queue:
                    deadline.deadline = math.inf
                    await self._wake.wait()
                    self._wake = trio.Event()
                    continue
                await self._gather()
                pieces = self._take()
                deadline.deadline = trio.current_time() + write_timeout
                self._writing = True
                try:
                    await write_pieces(stream, pieces)
                except Exception as exc:  # StreamReset, StreamClosed, connection errors
                    raise StreamClosed(f"{type(exc).__name__}: {exc}") from exc
                finally:
                    self._writing = False
                deadline.deadline = math.inf
                self._progressed()
        if deadline.cancelled_caught:
            raise StreamClosed("write_timeout")

    async def _gather(self) -> None:
        # Trio runs each tick's tasks in random order, so one tick without growth may
        # only mean the producer runs after us in it: wait for two quiet ticks.
        if self._more_coming is None:
            return
        seen, quiet = len(self._queue), 0
        for _ in range(GATHER_TICKS):
            if self._queued_bytes >= COALESCE_BYTES or quiet >= 2 or not self._more_coming():
                return
            await trio.lowlevel.checkpoint()
            quiet = quiet + 1 if len(self._queue) == seen else 0
            seen = len(self._queue)

    def _take(self) -> list[Buffer]:
        """The pieces of the next frames, up to COALESCE_BYTES (at least one frame)."""
        pieces, size = self._queue.popleft()
        taken = list(pieces)
        while self._queue and size + self._queue[0][1] <= COALESCE_BYTES:
            more, more_size = self._queue.popleft()
            taken.extend(more)
            size += more_size
        self._queued_bytes -= size
        return taken


class _UnexpectedKind(FrameError):
    """A well-formed frame that has no place on our request stream."""


class OutboundLink:
    """Our requests to one peer. Without a stream they wait (the supervisor is asked to
    dial at once); on the stream they are outstanding until answered, refused, timed
    out or lost with the stream. Nothing is ever resent: the caller retries."""

    def __init__(
        self,
        peer: PeerName,
        emit: Emit,
        emit_answer: Emit,
        rejections: Counter[str],
        stats: Counter[str],
        on_change: Callable[[], None],
        *,
        max_payload: int,
        max_queued: int,
        timeout: float,
        write_timeout: float = math.inf,
    ) -> None:
        self.peer = peer
        self._emit, self._emit_answer = emit, emit_answer
        self._rejections = rejections
        self._stats = stats
        self._on_change = on_change
        self._max_payload = max_payload
        self._max_queued = max_queued
        self._write_timeout = write_timeout
        #: waiting for a stream (with their payload), then on it until answered
        self._queued: RequestTable[bytes] = RequestTable(timeout)
        self._outstanding: RequestTable[None] = RequestTable(timeout)
        self._writer: FrameWriter | None = None
        #: Requests are waiting for a stream: the supervisor should dial now.
        self.wanted = False

    # -- commands ---------------------------------------------------------------------
    def enqueue(self, request: SendRequest) -> None:
        request_id = request.request_id
        if len(request.data) > self._max_payload:
            return self._fail(request_id, "oversized")
        if request_id in self._outstanding or request_id in self._queued:
            return self._fail(request_id, "duplicate_request_id")
        now = trio.current_time()
        if self._writer is not None:
            return self._start(request_id, request.data, now, None, self._writer)
        if len(self._queued) >= self._max_queued:
            return self._fail(request_id, "queue_full")
        self._queued.add(request_id, now, request.data)
        if not self.wanted:
            self.wanted = True
            self._on_change()

    def expire(self, now: float) -> None:
        """Fail what waited longer than the request timeout (queued or unanswered)."""
        for request_id in [*self._queued.expire(now), *self._outstanding.expire(now)]:
            self._fail(request_id, "timeout")

    def fail_queued(self, error: str) -> None:
        """The peer cannot be reached now: fail what waits for it (the caller retries)."""
        queued = self._queued.take_all()
        self.wanted = False
        for request_id in queued:
            self._fail(request_id, error)

    def fail_all(self, error: str) -> None:
        self.fail_queued(error)
        self._break(error)

    @property
    def running(self) -> bool:
        return self._writer is not None

    # -- running on a stream ----------------------------------------------------------
    async def run(self, stream: INetStream) -> None:
        """Carry requests on `stream` until it breaks; then fail what was outstanding."""
        writer = FrameWriter()
        errors: list[str] = []
        try:
            async with trio.open_nursery() as nursery:
                self._writer = writer
                self.wanted = False
                now = trio.current_time()
                for request_id, (deadline, data) in self._queued.take_all().items():
                    self._start(request_id, data, now, deadline, writer)
                self._on_change()
                nursery.start_soon(self._write, writer, stream, errors, nursery.cancel_scope)
                errors.append(await self._read(stream))
                nursery.cancel_scope.cancel()
        finally:
            self._writer = None
            writer.close()
            self._on_change()  # not connected any more, before the failures are seen
            self._break(errors[0] if errors else "link_closed")

    async def _write(
        self, writer: FrameWriter, stream: INetStream, errors: list[str], scope: trio.CancelScope
    ) -> None:
        try:
            await writer.run(stream, self._write_timeout)
        except StreamClosed as exc:
            errors.append(f"link_broken: {exc}")
            scope.cancel()  # a stream we cannot write to is lost for reading too

    async def _read(self, stream: INetStream) -> str:
        try:
            await read_frames(stream, self._max_payload, self._on_answer)
        except StreamClosed as exc:
            return f"link_broken: {exc}"
        except _UnexpectedKind:
            self._rejections["malformed_frame"] += 1
            return "link_broken: unexpected frame kind"
        except FrameError as exc:
            self._rejections[exc.reason] += 1
            return f"link_broken: peer sent a bad frame ({exc.reason})"
        return "link_closed_by_peer"

    def _on_answer(self, frame: Frame) -> None:
        if frame.kind not in (Kind.RESPONSE, Kind.ERROR):
            raise _UnexpectedKind("malformed_frame", f"{frame.kind.name} on our request stream")
        if self._outstanding.pop(frame.request_id) is None:
            self._stats["late_or_unknown_response"] += 1
        elif frame.kind is Kind.RESPONSE:
            self._emit_answer(ResponseReceived(frame.request_id, self.peer, frame.payload))
        else:
            reason = frame.payload[:64].decode("utf-8", "replace")
            self._fail(frame.request_id, f"refused_by_peer: {reason}")

    # -- helpers ------------------------------------------------------------------------
    def _start(
        self, request_id: int, data: bytes, now: float, deadline: float | None, writer: FrameWriter
    ) -> None:
        self._outstanding.add(request_id, now, None, deadline)
        writer.put(tagged_header(Kind.REQUEST, request_id, len(data)), data)

    def _break(self, error: str) -> None:
        for request_id in self._outstanding.take_all():
            self._fail(request_id, error)

    def _fail(self, request_id: int, error: str) -> None:
        self._emit(RequestFailed(request_id, self.peer, error))

"""Our Yamux muxer for py-libp2p: a thin trio shell around the sans-IO session and ciphers.

py-libp2p builds the muxer on the secured connection right after negotiating
`/yamux/1.0.0`; `LeanYamux` then takes the connection over (takeover.py) and from there
on the data phase is ours, on the same wire (docs/libp2p-protocol.md):

- **one reader task** per connection reads up to 1 MiB at a time, opens every
  complete Noise message (noise_cipher.py) or TLS record (tls_record.py), parses every
  complete Yamux frame (yamux_session.py) into per-stream buffers and wakes the readers
  concerned: no await per message or per frame (a batch that has arrived whole is read
  whole);
- **a write** frames its whole payload (within the peer's window) and seals and sends
  it, with any control frames queued meanwhile (window updates, ACKs, ping answers,
  FIN/RST), in vectored writes of up to SEND_BATCH bytes. It waits only when the peer's
  window is shut or the socket is full. Control frames no write carries are sent by a
  flusher task.
- **a write cannot be cancelled halfway**: Noise numbers its messages, so a write
  cancelled between sealing and sending would burn a nonce and every later message
  would fail authentication at the peer. Taking the write lock stays cancellable; what
  the socket takes at once is written without a checkpoint, the rest under a shield,
  bounded by `send_timeout`: a peer that stops reading for that long has lost the
  connection.
- a peer that breaks the protocol (a window exceeded, a forged Noise message, a bad
  frame) loses the connection: GO_AWAY (protocol error), close, and
  `on_refused(reason)` counts it.
- `close()` sends GO_AWAY and closes the socket (shielded, at most CLOSE_TIMEOUT); the
  swarm learns of any end through `accept_stream`, which then raises
  MuxedConnUnavailable.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections import deque
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any, TypeVar

import multiaddr
import trio
from libp2p.abc import ConnectionType, IMuxedConn, IMuxedStream, ISecureConn
from libp2p.peer.id import ID
from libp2p.stream_muxer.exceptions import (
    MuxedConnUnavailable,
    MuxedStreamClosed,
    MuxedStreamEOF,
    MuxedStreamError,
    MuxedStreamReset,
)

from worker.transport.libp2p.noise_cipher import MAX_PLAINTEXT, NoiseDecryptError
from worker.transport.libp2p.takeover import take_over
from worker.transport.libp2p.tls_record import TlsRecordError
from worker.transport.libp2p.yamux_session import (
    DEFAULT_WINDOW,
    GO_AWAY_NORMAL,
    GO_AWAY_PROTOCOL_ERROR,
    DataReceived,
    Event,
    GoAwayReceived,
    StreamOpened,
    StreamState,
    StreamUnusable,
    YamuxProtocolError,
    YamuxSession,
)
from worker.vectored import write_vectored

log = logging.getLogger(__name__)
#: Bytes asked of the socket per read: a whole batch (500 KB) and what follows it.
#: 256 KiB reads cost 4-5 % more CPU over a whole local run at 160,000 tx/s.
READ_SIZE = 1024 * 1024
#: After a read at least this large, read again before waiting: more is likely queued
#: (a large message is on its way), and a wait costs an epoll registration and a trip
#: through trio's scheduler where a read that finds nothing costs one syscall.
EAGER_READ = 16 * 1024
#: A large write is sealed and sent this much at a time: a batch of up to 500 KB in one
#: seal and one write. Smaller groups let the peer open the first while we seal the next
#: (lower latency for a lone batch when a core is idle), but on a box whose cores are
#: all busy there is no idle core to overlap with, and each group costs a seal and a
#: write: 128 KiB cost 14-29 % more CPU per 500 KB request (docs/libp2p-protocol.md).
SEND_BATCH = 512 * 1024
SEND_TIMEOUT = 10.0
CLOSE_TIMEOUT = 1.0
Buffer = bytes | bytearray | memoryview
_T = TypeVar("_T")
OnRefused = Callable[[str], None]


class ConnectionLost(Exception):
    """The socket failed, or a send could not finish within `send_timeout`."""


class LeanYamux(IMuxedConn):
    """`IMuxedConn` over a connection taken from py-libp2p (see the module docstring)."""

    def __init__(
        self,
        secured_conn: ISecureConn,
        peer_id: ID,
        *,
        window: int = DEFAULT_WINDOW,
        max_buffered: int | None = None,
        send_timeout: float = SEND_TIMEOUT,
        on_refused: OnRefused | None = None,
    ) -> None:
        taken = take_over(secured_conn)
        self.secured_conn = secured_conn
        self.peer_id = peer_id
        self._initiator = bool(secured_conn.is_initiator)
        self._socket = taken.socket
        self._sealer, self._opener = taken.sealer, taken.opener
        self._leftover = taken.leftover
        self._session = YamuxSession(self._initiator, window=window, max_buffered=max_buffered)
        self._send_timeout = send_timeout
        self._on_refused = on_refused
        self._write_lock = trio.Lock()
        #: Sealed bytes an unyielding write left unsent: they go before anything else.
        self._backlog: list[memoryview] = []
        self._flush_wanted = trio.Event()
        self._accept_tx, self._accept_rx = trio.open_memory_channel[LeanStream](math.inf)
        self._nursery: trio.Nursery | None = None
        self.event_started = trio.Event()
        self.event_closed = trio.Event()

    # -- IMuxedConn -----------------------------------------------------------------------
    @property
    def is_initiator(self) -> bool:
        return self._initiator

    @property
    def is_established(self) -> bool:
        return self.event_started.is_set() and not self.event_closed.is_set()

    @property
    def is_closed(self) -> bool:
        return self.event_closed.is_set()

    @property
    def buffered(self) -> int:
        """Received stream data nobody has read yet."""
        return self._session.buffered

    async def start(self) -> None:
        """Run the connection until it ends (the swarm runs this as a task)."""
        if self.event_started.is_set():
            return
        try:
            if not self.is_closed:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    nursery.start_soon(self._read_loop)
                    nursery.start_soon(self._flush_loop)
                    self.event_started.set()
        finally:
            self.event_started.set()
            self._shutdown()

    async def close(self, error_code: int = GO_AWAY_NORMAL) -> None:
        if self.is_closed:
            return
        self._session.go_away(error_code)
        shield, deadline = trio.CancelScope(shield=True), trio.move_on_after(CLOSE_TIMEOUT)
        with shield, deadline, contextlib.suppress(ConnectionLost):
            async with self._write_lock:
                await self._send_pending()
        self._shutdown()

    async def open_stream(self) -> LeanStream:
        if self.is_closed:
            raise MuxedStreamError("connection closed")
        try:
            state = self._session.open_stream()
        except StreamUnusable as exc:
            raise MuxedStreamError(str(exc)) from exc
        stream = state.owner = LeanStream(self, state)
        self._flush_wanted.set()  # the SYN; usually it leaves with the first write
        await trio.lowlevel.checkpoint()
        return stream

    async def accept_stream(self) -> IMuxedStream:
        try:
            return await self._accept_rx.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            raise MuxedConnUnavailable("connection closed") from None

    def get_transport_addresses(self) -> list[multiaddr.Multiaddr]:
        return self.secured_conn.get_transport_addresses()

    def get_connection_type(self) -> ConnectionType:
        return self.secured_conn.get_connection_type()

    def get_remote_address(self) -> tuple[str, int] | None:
        return self.secured_conn.get_remote_address()

    # -- the data phase -------------------------------------------------------------------
    async def _read_loop(self) -> None:
        try:
            if self._leftover:
                self._deliver(self._session.receive_data(self._leftover))
            opener, session, got = self._opener, self._session, 0
            # one read buffer for the connection's life, warm in cache: the openers copy
            # out what they keep (decrypted messages, the start of a partial one)
            buffer = bytearray(READ_SIZE)
            view = memoryview(buffer)
            while True:
                sock = self._socket.socket
                if sock.fileno() < 0:  # closed (by `_shutdown`) since the last read
                    break
                # Wait first after a small read (acks, small messages: a read that would
                # block costs a syscall and an exception per message); read again first
                # after a large one (EAGER_READ).
                if got < EAGER_READ:
                    await trio.lowlevel.wait_readable(sock)
                else:
                    await trio.lowlevel.checkpoint()
                try:
                    got = os.readv(sock.fileno(), (buffer,))
                except BlockingIOError:
                    got = 0
                    continue
                if not got:  # the peer closed the connection
                    break
                self._deliver(session.receive_messages(opener.open(view[:got])))
                if session.has_data_to_send:
                    self._flush_wanted.set()
                if opener.closed:  # TLS close_notify: the peer sends nothing more
                    break
        except (YamuxProtocolError, NoiseDecryptError, TlsRecordError) as exc:
            if self._on_refused is not None:
                self._on_refused(exc.reason)
            await self.close(GO_AWAY_PROTOCOL_ERROR)
        except _GoAway:
            pass
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
        except Exception:  # a bug of ours must not take the swarm down: this connection ends
            log.exception("yamux reader failed; closing the connection to %s", self.peer_id)
        finally:
            self._shutdown()

    def _deliver(self, events: list[Event]) -> None:
        for event in events:
            kind = type(event)
            if kind is StreamOpened:
                stream = event.stream.owner = LeanStream(self, event.stream)  # type: ignore[union-attr]
                self._accept_tx.send_nowait(stream)
            elif kind is GoAwayReceived:
                raise _GoAway
            else:
                owner = event.stream.owner  # type: ignore[union-attr]
                if owner is None:
                    pass
                elif kind is DataReceived:
                    owner.data_arrived()
                else:
                    owner.wake()

    async def _flush_loop(self) -> None:
        """Send control frames that no write carried (ACKs, window updates, pongs)."""
        with contextlib.suppress(ConnectionLost):
            while True:
                await self._flush_wanted.wait()
                self._flush_wanted = trio.Event()
                async with self._write_lock:
                    await self._send_pending()

    async def _send_pending(self) -> None:
        """Seal and send everything queued (call with the write lock held). What the socket
        takes at once is sent without a checkpoint; the rest under a shield, within
        `send_timeout`."""
        if not self._session.has_data_to_send and not self._backlog:
            return
        groups = batches(self._session.data_to_send(), SEND_BATCH, self._sealer.max_plaintext)
        sock = self._socket.socket
        try:
            if self._backlog:  # what an unyielding write left goes first
                unsent, self._backlog = self._backlog, []
                return await self._send_patiently(unsent, groups)
            unsent, rest = self._send_what_fits(sock.fileno(), groups)
            if unsent:
                await self._send_patiently(unsent, rest)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._shutdown()
            raise ConnectionLost(str(exc)) from exc
        except ConnectionLost:
            self._shutdown()
            raise

    def _send_what_fits(
        self, fd: int, groups: list[list[Buffer]]
    ) -> tuple[list[memoryview], list[list[Buffer]]]:
        """Seal and write groups while the socket takes them whole: what it left of the
        last one written, and the groups not sealed yet (both empty when all went)."""
        for i, group in enumerate(groups):
            unsent = write_vectored(fd, self._sealer.seal(group))
            if unsent:
                return unsent, groups[i + 1 :]
        return [], []

    async def _send_patiently(self, unsent: list[memoryview], groups: list[list[Buffer]]) -> None:
        """The rest once the socket takes it, under a shield, within `send_timeout`."""
        with trio.CancelScope(shield=True):
            with trio.move_on_after(self._send_timeout) as deadline:
                await self._send_rest(unsent, groups)
        if deadline.cancelled_caught:
            raise ConnectionLost("send timed out")

    async def _send_rest(self, unsent: list[memoryview], groups: list[list[Buffer]]) -> None:
        sock = self._socket.socket
        while unsent:
            await trio.lowlevel.wait_writable(sock)
            unsent = write_vectored(sock.fileno(), unsent)
        for group in groups:
            unsent = write_vectored(sock.fileno(), self._sealer.seal(group))
            while unsent:
                await trio.lowlevel.wait_writable(sock)
                unsent = write_vectored(sock.fileno(), unsent)

    def write_nowait(self, stream: LeanStream, pieces: Sequence[Buffer]) -> bool:
        """Send `pieces` on `stream` without yielding, when nobody else is sending and the
        peer's window takes them whole; False (nothing sent) otherwise. Saves the caller a
        trip through a writer task. What the socket does not take now is left, sealed,
        to the flusher (ahead of anything later); a lost connection loses them, as it
        loses whatever was in flight."""
        state = stream.state
        if (
            self._write_lock.locked()
            or self._backlog
            or self.is_closed
            or state.reset
            or state.local_closed
            or state.send_window < sum(len(p) for p in pieces)
        ):
            return False
        session = self._session
        for piece in pieces:
            if len(piece):
                session.send(state, piece)
        groups = batches(session.data_to_send(), SEND_BATCH, self._sealer.max_plaintext)
        try:
            unsent, rest = self._send_what_fits(self._socket.socket.fileno(), groups)
            if unsent:
                self._backlog = unsent + [memoryview(p) for g in rest for p in self._sealer.seal(g)]
                self._flush_wanted.set()
        except OSError:
            self._shutdown()
        return True

    async def write(self, stream: LeanStream, pieces: Sequence[Buffer]) -> None:
        """Send `pieces` in order on `stream` (no copy of large ones: see the session)."""
        pending = deque(memoryview(p) for p in pieces if len(p))
        session, state = self._session, stream.state
        lock = self._write_lock
        while pending:
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                lock.acquire_nowait()  # uncontended: no trip through the scheduler
            except trio.WouldBlock:
                await lock.acquire()
            try:
                while pending:
                    piece = pending[0]
                    sent = session.send(state, piece)
                    if sent < len(piece):
                        pending[0] = piece[sent:]
                        break
                    pending.popleft()
                await self._send_pending()
            except StreamUnusable as exc:
                raise stream.unusable(exc) from None
            except ConnectionLost as exc:
                raise MuxedStreamReset(f"connection lost: {exc}") from exc
            finally:
                lock.release()
            # The peer's window is shut, unless its update came in while we were sending
            # (that wake-up is gone: waiting now would wait for good).
            if pending and state.send_window <= 0:
                await stream.wait_for_change()

    def wake_flusher(self) -> None:
        if self._session.has_data_to_send:
            self._flush_wanted.set()

    def _shutdown(self) -> None:
        """The connection is over (idempotent): streams end, the socket closes."""
        if self.event_closed.is_set():
            return
        self.event_closed.set()
        for state in self._session.connection_lost():
            if state.owner is not None:
                state.owner.wake()
        self._accept_tx.close()
        self._socket.socket.close()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()


class _GoAway(Exception):
    """The peer is going away: we end the connection too (as py-libp2p does)."""


class LeanStream(IMuxedStream):
    """One Yamux stream of a `LeanYamux` connection."""

    def __init__(self, conn: LeanYamux, state: StreamState) -> None:
        self.muxed_conn = conn
        self.state = state
        self.stream_id = state.id
        self._changed = trio.Event()
        self._want = 1  # bytes the waiting reader needs before it is woken for data
        #: Called in the read loop when data arrives, instead of waking a reader.
        self._consumer: Callable[[], None] | None = None

    async def read(self, n: int | None = None) -> bytes:
        """Up to `n` (default: all) unread bytes, waiting for some if there are none."""
        if n == 0:
            return b""
        limit = None if n is None or n < 0 else n
        return await self._take(lambda session, state: session.read(state, limit))

    async def read_chunks(self, at_least: int = 1) -> list[Buffer]:
        """Everything unread, as the chunks it arrived in (no copy: `bytes` or read-only
        views of memory that never changes), once there are `at_least` bytes (or the
        stream ended: then whatever is left, maybe nothing).
        Never more than half the window is waited for: the peer can only send more once
        we have read that much (it then gets its window update)."""
        self._want = max(1, min(at_least, self.muxed_conn._session.window // 2))
        try:
            return await self._take(YamuxSession.read_chunks)
        finally:
            self._want = 1

    def consume(self, consumer: Callable[[], None] | None) -> None:
        """Have `consumer` called in the connection's read loop whenever data arrives
        (it takes it with `take_chunks`), instead of waking a reader: a hop less per
        message. Other changes (FIN, reset, window) still wake `wait_for_change`."""
        self._consumer = consumer

    def take_chunks(self) -> list[Buffer]:
        """Everything unread now, as it arrived, without waiting ([] when nothing)."""
        chunks = self.muxed_conn._session.read_chunks(self.state)
        if chunks:
            self.muxed_conn.wake_flusher()  # a window update, now and then
        return chunks

    async def _take(self, take: Callable[[YamuxSession, StreamState], _T]) -> _T:
        conn, state = self.muxed_conn, self.state
        while True:
            if state.buffered >= self._want or state.remote_closed or state.reset:
                data = take(conn._session, state)
                if data:
                    conn.wake_flusher()  # a window update, now and then
                    await trio.lowlevel.checkpoint_if_cancelled()  # all was taken: no spin
                    return data
            if state.reset:
                raise MuxedStreamReset("stream reset")
            if state.remote_closed:
                raise MuxedStreamEOF("stream closed by the peer")
            await self.wait_for_change()

    async def write(self, data: bytes) -> None:
        await self.muxed_conn.write(self, (data,))

    async def write_pieces(self, pieces: Sequence[Buffer]) -> None:
        """Write the concatenation of `pieces` without joining them first."""
        await self.muxed_conn.write(self, pieces)

    def write_nowait(self, pieces: Sequence[Buffer]) -> bool:
        """`pieces` sent at once, or False (nothing sent): see `LeanYamux.write_nowait`."""
        return self.muxed_conn.write_nowait(self, pieces)

    async def close(self) -> None:
        """Half-close (FIN): the peer's data still arrives."""
        self.muxed_conn._session.close(self.state)
        self.muxed_conn.wake_flusher()
        await trio.lowlevel.checkpoint()

    async def reset(self) -> None:
        self.muxed_conn._session.reset(self.state)
        self.muxed_conn.wake_flusher()
        self.wake()
        await trio.lowlevel.checkpoint()

    def set_deadline(self, ttl: int) -> None:
        raise NotImplementedError("Yamux streams have no deadlines")

    def get_remote_address(self) -> tuple[str, int] | None:
        return self.muxed_conn.get_remote_address()

    async def __aenter__(self) -> LeanStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- for the connection ---------------------------------------------------------------
    def data_arrived(self) -> None:
        if self._consumer is not None:
            self._consumer()
        elif self.state.buffered >= self._want:
            self.wake()

    def wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_change(self) -> None:
        """Until data, a window update, the peer's FIN or a reset arrives (or the end)."""
        state = self.state
        if state.reset:
            raise MuxedStreamReset("stream reset")
        await self._changed.wait()

    def unusable(self, exc: Exception) -> MuxedStreamError:
        if self.state.reset:
            return MuxedStreamReset(str(exc))
        return MuxedStreamClosed(str(exc))


def batches(segments: list[Buffer], size: int, unit: int = MAX_PLAINTEXT) -> list[list[Buffer]]:
    """`segments` in consecutive groups of about `size` bytes. A segment longer than that
    is cut (without a copy) at multiples of `unit` (the most plaintext one Noise message
    or TLS record holds), so its messages are those it would have sealed into whole:
    only the grouping changes, never the wire."""
    step = max(unit, size // unit * unit)
    groups: list[list[Buffer]] = [[]]
    filled = 0
    for segment in segments:
        length = len(segment)
        pieces = (
            [segment]
            if length <= step
            else [memoryview(segment)[start : start + step] for start in range(0, length, step)]
        )
        for piece in pieces:
            if filled and filled + unit > size:  # no room for another whole message
                groups.append([])
                filled = 0
            groups[-1].append(piece)
            filled += len(piece)
    return groups


def muxer_factory(**options: Any) -> Callable[[ISecureConn, ID], LeanYamux]:
    """What the host's muxer negotiation instantiates: `LeanYamux` with these options."""

    def build(secured_conn: ISecureConn, peer_id: ID) -> LeanYamux:
        return LeanYamux(secured_conn, peer_id, **options)

    return build

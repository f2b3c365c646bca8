"""Admission: running the worker handshake on every new connection.

The dialer opens `/narwhal/worker/handshake/1.0.0` on the new connection itself and
sends its handshake; the listener verifies it and answers with its own; the dialer
verifies that and confirms (HANDSHAKE_OK). So each side has accepted the other before
it lets requests flow: the listener accepted the dialer before answering, and it only
sends requests itself after the confirmation. Any failure closes the connection.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable

import trio
from libp2p.abc import INetConn, INetStream
from libp2p.custom_types import TProtocol

from worker.transport.libp2p.framing import (
    FrameError,
    FrameReader,
    Kind,
    StreamClosed,
    encode_frame,
)
from worker.transport.libp2p.handshake import (
    MAX_HANDSHAKE_BYTES,
    HandshakeRejected,
    Verifier,
    decode_payload,
)
from worker.transport.libp2p.host import close_quietly, open_stream_on, reset_quietly
from worker.transport.libp2p.peers import ConnState, PeerTable

HANDSHAKE_PROTOCOL = TProtocol("/narwhal/worker/handshake/1.0.0")
HANDSHAKE_CHUNK = 2 * MAX_HANDSHAKE_BYTES
Spawn = Callable[..., None]


class _PeerRefused(Exception):
    """The other side ended the handshake: it refused us (and counts why)."""


class Admission:
    def __init__(
        self,
        peers: PeerTable,
        verifier: Verifier,
        my_handshake: bytes,
        rejections: Counter[str],
        stats: Counter[str],
        handshakes: Counter[str],
        spawn: Spawn,
        timeout: float,
    ) -> None:
        self._peers = peers
        self._verifier = verifier
        self._my_handshake = my_handshake
        self._rejections = rejections
        self._stats = stats
        self._handshakes = handshakes  # "accepted", or the reason we refused
        self._spawn = spawn
        self._timeout = timeout

    # -- swarm notifications (must not block) ---------------------------------------------
    def on_connected(self, conn: INetConn) -> None:
        if conn.is_closed:
            return
        state = self._peers.track(conn)
        if conn.muxed_conn.is_initiator:
            self._spawn(self._initiate, state)
        else:
            self._spawn(self._watch, state)

    def on_disconnected(self, conn: INetConn) -> None:
        self._peers.drop(conn)

    # -- the two sides ----------------------------------------------------------------------
    async def _initiate(self, state: ConnState) -> None:
        """Dialer: send ours, verify theirs, confirm."""
        stream: INetStream | None = None
        try:
            with trio.fail_after(self._timeout):
                stream = await open_stream_on(state.conn, HANDSHAKE_PROTOCOL)
                await stream.write(encode_frame(Kind.HANDSHAKE, 0, self._my_handshake))
                frame = await _reader(stream).read_frame()
                if frame is None:
                    raise _PeerRefused
                self._admit(state, frame.kind, frame.payload)
                await stream.write(encode_frame(Kind.HANDSHAKE_OK, 0))
                self._ready(state)
            # A reset now could overtake the confirmation (Yamux drops buffered data on
            # a reset), so let the listener end the stream, then drop it either way.
            with trio.move_on_after(self._timeout), contextlib.suppress(Exception):
                await stream.read(1)
        except Exception as exc:  # every failure closes this connection
            self._failed(state, exc)
        finally:
            if stream is not None:
                with trio.CancelScope(shield=True):
                    await reset_quietly(stream)

    async def on_stream(self, stream: INetStream) -> None:
        """Listener (stream handler): verify theirs, answer with ours, await the confirmation."""
        state = self._peers.track(stream.swarm_conn)  # type: ignore[attr-defined]
        try:
            with trio.fail_after(self._timeout):
                reader = _reader(stream)
                frame = await reader.read_frame()
                if frame is None:
                    raise HandshakeRejected("malformed")
                self._admit(state, frame.kind, frame.payload)
                await stream.write(encode_frame(Kind.HANDSHAKE, 0, self._my_handshake))
                frame = await reader.read_frame()
                if frame is None or frame.kind is not Kind.HANDSHAKE_OK:
                    raise _PeerRefused
                self._ready(state)
        except Exception as exc:  # every failure closes this connection
            self._failed(state, exc)  # count first: the peer sees the reset next
        finally:
            # Reset, never half-close: a half-closed stream would keep receiving (and
            # holding) whatever the peer sends; after a reset it is dropped on arrival.
            with trio.CancelScope(shield=True):
                await reset_quietly(stream)

    async def _watch(self, state: ConnState) -> None:
        """Close an inbound connection whose dialer never completes a handshake."""
        with trio.move_on_after(self._timeout):
            await state.settled.wait()
            return
        if self._peers.get(state.conn) is state and not state.ready:
            self._refused("handshake_timeout")
            self._peers.drop(state.conn)
            await close_quietly(state.conn)

    # -- helpers ------------------------------------------------------------------------
    def _admit(self, state: ConnState, kind: Kind, payload: bytes) -> None:
        if kind is not Kind.HANDSHAKE:
            raise HandshakeRejected("malformed")
        name = self._verifier.check(decode_payload(payload), state.peer_id.to_bytes())
        self._peers.admit(state, name)

    def _ready(self, state: ConnState) -> None:
        self._handshakes["accepted"] += 1
        self._peers.mark_ready(state)

    def _refused(self, reason: str) -> None:
        self._rejections[reason] += 1
        self._handshakes[reason] += 1

    def _failed(self, state: ConnState, exc: Exception) -> None:
        if isinstance(exc, HandshakeRejected | FrameError):
            self._refused(exc.reason)
        elif isinstance(exc, trio.TooSlowError):
            self._refused("handshake_timeout")
        elif isinstance(exc, _PeerRefused | StreamClosed):
            self._stats["handshake_refused_by_peer"] += 1
        else:
            self._stats["handshake_failed"] += 1
        self._peers.drop(state.conn)
        self._spawn(close_quietly, state.conn)


def _reader(stream: INetStream) -> FrameReader:
    """Handshake frames are small: take little from the stream at a time."""
    return FrameReader(stream, MAX_HANDSHAKE_BYTES, chunk=HANDSHAKE_CHUNK)

"""The trio shell of our Yamux (muxer.py) and the takeover from py-libp2p (takeover.py):
writes that cannot be cancelled halfway, a peer that stops reading, closing, and what
py-libp2p leaves behind when we take a connection over. Real hosts on 127.0.0.1."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing
from libp2p.abc import IHost, INetConn
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.custom_types import TProtocol
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.io import NoiseTransportReadWriter
from libp2p.security.secure_session import SecureSession
from noise.exceptions import NoiseMaxNonceError

from tests.worker.transport.libp2p.support import HANG_GUARD, stock_host
from tests.worker.transport.libp2p.test_noise_cipher import _handshake
from tests.worker.transport.libp2p.test_stock_interop import ECHO, echo, read_to_end
from worker.transport.libp2p.framing import FrameReader, Kind, tagged_header, write_pieces
from worker.transport.libp2p.host import (
    build_host,
    listen_addr,
    load_or_create_identity,
    open_stream_on,
)
from worker.transport.libp2p.muxer import LeanYamux
from worker.transport.libp2p.takeover import TakeoverError, take_over

SINK = TProtocol("/narwhal/test/sink/1.0.0")
FRAMES = TProtocol("/narwhal/test/frames/1.0.0")


async def sink(stream) -> None:  # type: ignore[no-untyped-def]
    """Reads everything, answers with the byte count."""
    data = await read_to_end(stream)
    await stream.write(str(len(data)).encode())
    await stream.close()


@asynccontextmanager
async def connected(a: IHost, b: IHost) -> AsyncIterator[tuple[INetConn, INetConn]]:
    for host in (a, b):
        host.set_stream_handler(ECHO, echo)
        host.set_stream_handler(SINK, sink)
    async with a.run([listen_addr("127.0.0.1")]), b.run([listen_addr("127.0.0.1")]):
        with trio.fail_after(HANG_GUARD):
            await a.connect(PeerInfo(b.get_id(), b.get_addrs()))
        (conn_a,) = a.get_network().get_connections(b.get_id())
        (conn_b,) = b.get_network().get_connections(a.get_id())
        try:
            yield conn_a, conn_b
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(HANG_GUARD):
                await a.close()
                await b.close()


def ours(tmp: Path, name: str, **options: float | str) -> IHost:
    return build_host(load_or_create_identity(tmp / name), **options)  # type: ignore[arg-type]


async def test_a_write_cancelled_while_sending_leaves_the_connection_intact(
    tmp_path: Path,
) -> None:
    """12 MiB fit the peer's window: one sealed buffer, one send_all, which has to wait for
    the peer to read. Cancelled right then, the write still finishes (nothing half sent, no
    nonce burned) and the connection carries on. (Unshielded, the peer would see a torn
    Noise message and the connection would die.)"""
    async with connected(ours(tmp_path, "a"), ours(tmp_path, "b")) as (conn, _):
        muxer = conn.muxed_conn
        assert isinstance(muxer, LeanYamux)
        payload = bytes(12 * 1024 * 1024)
        net = await open_stream_on(conn, SINK)
        scope = trio.CancelScope()
        writer: list[trio.lowlevel.Task] = []
        written = trio.Event()

        async def write() -> None:
            writer.append(trio.lowlevel.current_task())
            with scope:
                await net.write(payload)
                written.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write)
            with trio.fail_after(HANG_GUARD):
                while not writer or muxer._write_lock.statistics().owner is not writer[0]:
                    await trio.lowlevel.checkpoint()  # until the writer is inside send_all
            scope.cancel()
        assert written.is_set()  # the cancel could not cut the write short
        await net.close()
        with trio.fail_after(HANG_GUARD):
            assert await read_to_end(net) == str(len(payload)).encode()  # all of it arrived
            assert await _echo(conn, b"and the connection lives") == b"and the connection lives"


async def test_a_peer_that_stops_reading_loses_the_connection(tmp_path: Path) -> None:
    """The peer's socket reader is stuck: our 12 MiB write (within its window) cannot
    finish within `send_timeout`, so the connection is closed and the write fails."""
    async with connected(ours(tmp_path, "a", send_timeout=0.5), ours(tmp_path, "b")) as conns:
        conn, stuck_conn = conns
        stream = await open_stream_on(conn, SINK)
        stuck = _StuckSocket(stuck_conn.muxed_conn._socket.socket)  # type: ignore[attr-defined]
        stuck_conn.muxed_conn._socket.socket = stuck  # type: ignore[attr-defined]
        with trio.fail_after(HANG_GUARD), pytest.raises(StreamReset):
            await stream.write(bytes(12 * 1024 * 1024))
        assert conn.muxed_conn.is_closed
        stuck.close_silent()


async def test_closing_ends_the_peers_streams(tmp_path: Path) -> None:
    stock = stock_host(load_or_create_identity(tmp_path / "stock"))
    async with connected(ours(tmp_path, "a"), stock) as (conn, stock_conn):
        ours_stream = await conn.new_stream()
        await ours_stream.write(b"x")
        with trio.fail_after(HANG_GUARD):
            await trio.testing.wait_all_tasks_blocked()
            (theirs,) = [s for s in stock_conn.get_streams()]
            await conn.muxed_conn.close()
            with pytest.raises((StreamEOF, StreamReset)):  # reset or EOF, not a hang
                while await theirs.read(100):
                    pass
        with pytest.raises(StreamReset):
            await ours_stream.read(1)


def test_takeover_takes_the_ciphers_and_what_py_libp2p_buffered() -> None:
    a, b = _handshake()
    b.decrypt(a.encrypt(b"multistream lines"))  # py-libp2p's own, before the takeover
    session = _session(a)
    session._fill(b"yamux frames that came with the last multistream line")
    taken = take_over(session)
    assert taken.leftover == b"yamux frames that came with the last multistream line"
    assert taken.sealer.nonce == 1 and taken.opener.nonce == 0
    (_, message) = taken.sealer.seal([b"ours now"])
    assert bytes(b.decrypt(message)) == b"ours now"
    with pytest.raises(NoiseMaxNonceError):  # py-libp2p can no longer use these keys
        a.encrypt(b"stray")


def test_takeover_refuses_what_it_does_not_know() -> None:
    with pytest.raises(TakeoverError):
        take_over(object())


def _session(noise) -> SecureSession:  # type: ignore[no-untyped-def]
    keys = create_new_key_pair()
    raw = RawConnection(TrioTCPStream(None), True)  # type: ignore[arg-type]
    return SecureSession(
        local_peer=ID.from_pubkey(keys.public_key),
        local_private_key=keys.private_key,
        remote_peer=ID.from_pubkey(keys.public_key),
        remote_permanent_pubkey=keys.public_key,
        is_initiator=True,
        conn=NoiseTransportReadWriter(raw, noise),
    )


class _StuckSocket:
    """A trio socket whose reads wait on a socket nobody writes to (a reader that
    stopped); everything else passes to the real one."""

    def __init__(self, inner: object) -> None:
        self._inner = inner
        self._silent = socket.socketpair()
        for end in self._silent:  # as a trio socket's: a read that finds nothing returns
            end.setblocking(False)

    def fileno(self) -> int:
        return self._silent[0].fileno()

    def close_silent(self) -> None:
        """Wakes the stuck reader (ClosedResourceError) before the descriptors go, so
        trio keeps no waiter on a number the kernel may hand out again."""
        for end in self._silent:
            trio.lowlevel.notify_closing(end)
            end.close()

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


async def _echo(conn: INetConn, data: bytes) -> bytes:
    stream = await open_stream_on(conn, ECHO)
    await stream.write(data)
    await stream.close()
    return await read_to_end(stream)


async def test_frames_larger_than_half_the_window_keep_flowing(tmp_path: Path) -> None:
    """The frame reader asks for all a large payload still needs in one wake-up; with
    frames over half the window on a stream that has carried traffic, that must not wait
    for more than the window lets the peer send (the peer would wait for us forever)."""
    received: list[int] = []

    async def frames(stream) -> None:  # type: ignore[no-untyped-def]
        reader = FrameReader(stream, 16 * 2**20)
        while (frame := await reader.read_frame()) is not None:
            received.append(len(frame.payload))
        await stream.close()

    a, b = ours(tmp_path, "a"), ours(tmp_path, "b")
    b.set_stream_handler(FRAMES, frames)
    async with connected(a, b) as (conn, _):
        stream = await open_stream_on(conn, FRAMES)
        sizes = [1_000, 12 * 2**20, 12 * 2**20, 12 * 2**20]
        with trio.fail_after(HANG_GUARD):
            for k, size in enumerate(sizes):
                await write_pieces(stream, [tagged_header(Kind.REQUEST, k, size), bytes(size)])
            await stream.close()
            await read_to_end(stream)
        assert received == sizes


async def test_an_unyielding_write_the_socket_cannot_take_goes_out_first(tmp_path: Path) -> None:
    """`write_nowait` of more than the socket takes at once leaves the sealed rest to the
    flusher; a later write goes out behind it, and the peer gets both, whole and in order."""
    async with connected(ours(tmp_path, "a"), ours(tmp_path, "b")) as (conn, _):
        stream = await open_stream_on(conn, SINK)
        lean = stream.muxed_stream  # type: ignore[attr-defined]
        first, second = b"\x01" * (8 * 2**20), b"\x02" * 1000
        with trio.fail_after(HANG_GUARD):
            while lean.state.send_window < len(first):  # the 16 MiB grant rides on its ACK
                await lean.wait_for_change()
            await trio.testing.wait_all_tasks_blocked()  # the flusher is not sending
        assert lean.write_nowait([first])
        assert lean.muxed_conn._backlog  # the socket took only part of 8 MiB
        assert not lean.write_nowait([second])  # nothing may pass the backlog
        with trio.fail_after(HANG_GUARD):
            await stream.write(second)
            await stream.close()
            answer = await read_to_end(stream)
        assert int(answer) == len(first) + len(second)
        assert not lean.muxed_conn._backlog

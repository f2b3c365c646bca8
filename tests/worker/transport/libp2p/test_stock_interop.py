"""Our Yamux data phase against STOCK py-libp2p (its own Noise and Yamux, unpatched), on
real sockets on 127.0.0.1, in one process: the muxer is installed per host, so the stock
host keeps py-libp2p's own classes (asserted).

Covered both ways and with either side dialing: payloads of 1 B, 1 KB, one Noise
message's worth (65,519 B) and one byte more, and 2 MB (far beyond the 256 KiB window
stock py-libp2p grants, so our writes must wait for its window updates); several streams
at once; FIN (half-close, the answer still flows); resets from either side; pings from the
stock side; our writes stopping where the stock peer's window grants end; and a stock peer
breaking our window losing its connection (counted).
"""

from __future__ import annotations

import logging
import struct
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import trio
import trio.testing
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.stream.exceptions import StreamEOF, StreamReset
from libp2p.peer.peerinfo import PeerInfo
from libp2p.stream_muxer.yamux.yamux import MAX_WINDOW_SIZE, Yamux

from tests.worker.transport.libp2p.support import HANG_GUARD, stock_host
from worker.transport.libp2p.host import build_host, listen_addr, load_or_create_identity
from worker.transport.libp2p.muxer import LeanYamux
from worker.transport.libp2p.yamux_session import (
    DATA,
    DEFAULT_WINDOW,
    HEADER,
    INITIAL_WINDOW,
    PING,
    SYN,
)

ECHO = TProtocol("/narwhal/test/echo/1.0.0")
RESET = TProtocol("/narwhal/test/reset/1.0.0")
HOLD = TProtocol("/narwhal/test/hold/1.0.0")
SIZES = [1, 1_000, 65_519, 65_520, 2_000_000]
STREAMS = 8


async def read_to_end(stream: INetStream) -> bytes:
    chunks = []
    while True:
        try:
            chunk = await stream.read(1 << 20)
        except StreamEOF:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks)


async def echo(stream: INetStream) -> None:
    """Reads everything up to the writer's FIN, then sends it back and closes. (A stream
    handler must not raise: in py-libp2p that ends the connection's accept loop.)"""
    try:
        data = await read_to_end(stream)
        await stream.write(data)
        await stream.close()
    except StreamReset:
        pass


async def reset_after_first_read(stream: INetStream) -> None:
    await stream.read(1 << 20)
    await stream.reset()


@dataclass
class Pair:
    ours: IHost
    stock: IHost
    refused: Counter[str]
    hold: trio.Event  # released: the HOLD handler starts reading

    def conn(self, host: IHost) -> INetConn:
        other = self.stock if host is self.ours else self.ours
        (conn,) = host.get_network().get_connections(other.get_id())
        return conn

    async def exchange(self, sender: IHost, payload: bytes) -> bytes:
        """Echo `payload` through the other host on a new stream; what came back."""
        receiver = self.stock if sender is self.ours else self.ours
        stream = await sender.new_stream(receiver.get_id(), [ECHO])
        await stream.write(payload)
        await stream.close()
        return await read_to_end(stream)


@asynccontextmanager
async def pair(tmp: Path, ours_dials: bool) -> AsyncIterator[Pair]:
    refused: Counter[str] = Counter()
    hold = trio.Event()

    async def held(stream: INetStream) -> None:
        await hold.wait()
        await echo(stream)

    def count(reason: str) -> None:
        refused[reason] += 1

    ours = build_host(load_or_create_identity(tmp / "ours"), on_refused=count)
    stock = stock_host(load_or_create_identity(tmp / "stock"))
    for host in (ours, stock):
        host.set_stream_handler(ECHO, echo)
        host.set_stream_handler(RESET, reset_after_first_read)
        host.set_stream_handler(HOLD, held)
    async with ours.run([listen_addr("127.0.0.1")]), stock.run([listen_addr("127.0.0.1")]):
        dialer, listener = (ours, stock) if ours_dials else (stock, ours)
        with trio.fail_after(HANG_GUARD):
            await dialer.connect(PeerInfo(listener.get_id(), listener.get_addrs()))
        p = Pair(ours, stock, refused, hold)
        assert isinstance(p.conn(ours).muxed_conn, LeanYamux)
        assert p.conn(ours).get_negotiated_muxer_protocol() == "/yamux/1.0.0"  # type: ignore[attr-defined]
        assert type(p.conn(stock).muxed_conn) is Yamux  # py-libp2p's own, unpatched
        try:
            yield p
        finally:
            hold.set()
            with trio.CancelScope(shield=True), trio.move_on_after(HANG_GUARD):
                await ours.close()
                await stock.close()


dialers = pytest.mark.parametrize("ours_dials", [True, False], ids=["we-dial", "stock-dials"])


@dialers
async def test_payloads_both_ways(tmp_path: Path, ours_dials: bool) -> None:
    async with pair(tmp_path, ours_dials) as p:
        for size in SIZES:
            payload = bytes(range(256)) * (size // 256) + bytes(size % 256)
            for sender in (p.ours, p.stock):
                with trio.fail_after(HANG_GUARD):
                    assert await p.exchange(sender, payload) == payload, (size, sender)
        assert p.refused == Counter()


@dialers
async def test_several_streams_at_once_both_ways(tmp_path: Path, ours_dials: bool) -> None:
    async with pair(tmp_path, ours_dials) as p:
        results: dict[tuple[int, int], bytes] = {}

        async def one(sender: IHost, k: int) -> None:
            payload = bytes([k]) * (300_000 + k)
            results[id(sender), k] = await p.exchange(sender, payload)
            assert results[id(sender), k] == payload

        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                for sender in (p.ours, p.stock):
                    for k in range(STREAMS):
                        nursery.start_soon(one, sender, k)
        assert len(results) == 2 * STREAMS


@dialers
async def test_resets_from_either_side(tmp_path: Path, ours_dials: bool) -> None:
    async with pair(tmp_path, ours_dials) as p:
        for sender in (p.ours, p.stock):
            receiver = p.stock if sender is p.ours else p.ours
            with trio.fail_after(HANG_GUARD):
                stream = await sender.new_stream(receiver.get_id(), [RESET])
                await stream.write(b"hello")
                with pytest.raises((StreamReset, StreamEOF)):
                    while await stream.read(1 << 20):
                        pass
                # our own reset of a stream the peer still writes to
                stream = await sender.new_stream(receiver.get_id(), [ECHO])
                await stream.write(bytes(100_000))
                await stream.reset()
                assert await p.exchange(sender, b"still fine") == b"still fine"


async def test_pings_from_the_stock_side_are_answered(tmp_path: Path) -> None:
    async with pair(tmp_path, ours_dials=False) as p:
        stock_muxer = p.conn(p.stock).muxed_conn
        assert isinstance(stock_muxer, Yamux)
        for opaque in (1, 2**32 - 1):
            stock_muxer._ping_event = trio.Event()
            stock_muxer._ping_sent_time = trio.current_time()
            with trio.fail_after(HANG_GUARD):
                await stock_muxer._write_frame(HEADER.pack(0, PING, SYN, 0, opaque))
                await stock_muxer._ping_event.wait()  # set on our ACK
        assert stock_muxer.rtt() > 0
        assert await p.exchange(p.stock, b"after pings") == b"after pings"


async def test_our_writes_stop_at_the_stock_peers_window(tmp_path: Path) -> None:
    """The stock peer grants 256 KiB, and more as it reads (auto-tuning up to 16 MiB);
    it does not enforce its window, only logs a violation. While its handler does not
    read, our 20 MiB write must stop where its grants end, without a violation."""
    violations: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "exceeded receive window" in record.getMessage():
                violations.append(record.getMessage())

    handler = Collect(logging.WARNING)
    yamux_log = logging.getLogger(Yamux.__module__)
    yamux_log.addHandler(handler)
    try:
        async with pair(tmp_path, ours_dials=True) as p:
            payload = bytes(range(256)) * (20 * 4096)
            done = trio.Event()
            stream = await p.ours.new_stream(p.stock.get_id(), [HOLD])

            async def write() -> None:
                await stream.write(payload)
                await stream.close()
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write)
                await trio.testing.wait_all_tasks_blocked()
                held = _stock_buffered(p)
                assert INITIAL_WINDOW <= held <= MAX_WINDOW_SIZE < len(payload)
                assert not done.is_set()
                assert stream.muxed_stream.state.send_window == 0  # type: ignore[attr-defined]
                p.hold.set()
                with trio.fail_after(HANG_GUARD):
                    assert await read_to_end(stream) == payload
            assert done.is_set()
    finally:
        yamux_log.removeHandler(handler)
    assert violations == []


async def test_a_stock_peer_breaking_our_window_loses_the_connection(tmp_path: Path) -> None:
    async with pair(tmp_path, ours_dials=False) as p:
        ours_conn = p.conn(p.ours)
        stream = await p.stock.new_stream(p.ours.get_id(), [HOLD])
        await stream.write(b"x")  # multistream is done: the stream is ours to receive
        stock_muxer = p.conn(p.stock).muxed_conn
        assert isinstance(stock_muxer, Yamux)
        sid = stream.muxed_stream.stream_id  # type: ignore[attr-defined]
        too_much = DEFAULT_WINDOW  # our window minus the byte above, plus one
        await stock_muxer._write_frame(struct.pack(">BBHII", 0, DATA, 0, sid, too_much))
        with trio.fail_after(HANG_GUARD):
            await _until(lambda: ours_conn.muxed_conn.is_closed)
            await _until(lambda: p.stock.get_network().get_connections(p.ours.get_id()) == [])
        assert p.refused == Counter({"receive_window_exceeded": 1})


def _stock_buffered(p: Pair) -> int:
    muxer = p.conn(p.stock).muxed_conn
    return sum(len(b) for b in muxer.stream_buffers.values())  # type: ignore[attr-defined]


async def _until(predicate: Callable[[], bool]) -> None:
    """Let the hosts run until `predicate` holds, re-checked whenever every task is
    blocked (the sockets are quiet): no timers involved."""
    while not predicate():
        await trio.testing.wait_all_tasks_blocked()

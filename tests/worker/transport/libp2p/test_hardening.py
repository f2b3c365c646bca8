"""Resource attacks on the libp2p transport (issue 12, items 5, 6, 7 and 9).

Each attack runs against authority 0 of a 4-authority committee of real workers under
load on loopback: it must keep reaching quorum meanwhile (the longest gap is printed,
not asserted), and what the attack could make it hold stays bounded (asserted on the
transport's counters). The attacker is an admitted member (a bare host signing with the
key of authority 3, which is not running) or, for the socket flood, anyone.
"""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import trio
from libp2p.stream_muxer.yamux.yamux import TYPE_DATA, YAMUX_HEADER_FORMAT

from tests.worker.transport.libp2p.attacks import (
    LIBP2P,
    address,
    admitted_member,
    batch_stream,
    discover,
    keeps_quorum,
    lazy_batch_stream,
    loaded_committee,
    raw_sockets,
    transport,
    wait_end,
    worker,
)
from tests.worker.transport.libp2p.support import (
    HANG_GUARD,
    PARAMS,
    cluster,
    counted,
    pending_requests,
    plan,
    raw_client,
    read_or_none,
    wait_connected,
)
from worker.config import Parameters
from worker.transport.base import RequestReceived
from worker.transport.libp2p.framing import Kind, encode_frame
from worker.transport.libp2p.gate import MAX_PENDING
from worker.transport.libp2p.host import open_stream_on
from worker.transport.libp2p.transport import HANDSHAKE_PROTOCOL
from worker.transport.libp2p.yamux_session import DEFAULT_WINDOW
from worker.transport.testing.contract import expect

pytestmark = pytest.mark.slow
FLOOD_SOCKETS = 260  # more than py-libp2p's 250 inbound slots
REQUESTS = 20_000  # never read: ~450 KB of answers and refusals


def _requests(first: int, count: int, payload: bytes = b"junk") -> bytes:
    return b"".join(encode_frame(Kind.REQUEST, first + j, payload) for j in range(count))


async def _ends(stream) -> int:  # type: ignore[no-untyped-def]
    """Read until the stream is reset or closed; the number of frames read before."""
    frames = 0
    with trio.fail_after(HANG_GUARD):
        while await read_or_none(stream) is not None:
            frames += 1
    return frames


async def test_many_batch_streams_share_one_budget(tmp_path: Path) -> None:
    """Item 5, the bound itself: six streams of one member never hold more unanswered
    requests than one would (today: six times the bound)."""
    cap = 8
    params = Parameters(**{**PARAMS.model_dump(), "channel_capacity": cap})
    p = plan(3, tmp_path)
    async with cluster(p, running=[0, 1], build=lambda i: p.build(i, params)) as c:
        await wait_connected(c, [0, 1])
        server = c[0]
        async with raw_client(tmp_path) as client:
            with trio.fail_after(HANG_GUARD):
                conn = await client.connect(p.addrs[0])
                assert await client.handshake(conn, client.signed_handshake(p.keys[2], p.committee))
                streams = []
                for k in range(6):
                    stream = await client.batch_stream(p.addrs[0])
                    streams.append(stream)
                    await stream.write(_requests(100 * k, cap))
                    if k == 0:
                        for _ in range(cap):
                            await expect(server, RequestReceived)  # never answered
                    else:
                        await counted(server, "overloaded", cap * k)
            assert pending_requests(server) == []
            assert server.rejections["batch_stream_replaced"] == 5
            bounds = server.bounds()
            assert bounds["unanswered_peak"][p.names[2]] == cap
            assert bounds["inbound_streams"][p.names[2]] == 1
            for stream in streams[:-1]:
                await _ends(stream)  # replaced streams were reset


async def test_extra_batch_streams_are_reset_under_load(tmp_path: Path) -> None:
    """Item 5 under load: a member opening stream after stream keeps one."""
    async with loaded_committee(tmp_path, running=3) as c:
        victim, member_name = transport(c, 0), c.authorities[3].name
        async with admitted_member(tmp_path, c, 3) as member:
            async with keeps_quorum(worker(c, 0), "6 batch streams from one member"):
                streams = []
                for k in range(6):
                    stream = await batch_stream(member)
                    streams.append(stream)
                    await stream.write(_requests(100 * k, 50))
                    answer = await read_or_none(stream)  # the worker refuses the junk
                    assert answer is not None and answer.kind is Kind.RESPONSE
                    assert victim.rejections["batch_stream_replaced"] == k
            for stream in streams[:-1]:
                await _ends(stream)
            bounds = victim.bounds()
            assert bounds["inbound_streams"].get(member_name, 0) <= 1
            assert bounds["unanswered_peak"][member_name] <= LIBP2P.channel_capacity


async def test_a_dead_answer_writer_resets_the_stream(tmp_path: Path) -> None:
    """Item 6: a member that sends requests but never reads (not even multistream's
    answers, so its receive window stays at 256 KiB). Once the answer writer fails
    (window exhausted, write deadline), the stream is reset: the member sees it, instead
    of its requests being read, stored and reported while every answer is dropped."""
    async with loaded_committee(tmp_path, running=3) as c:
        victim = transport(c, 0)
        async with admitted_member(tmp_path, c, 3) as member:
            async with keeps_quorum(worker(c, 0), "a member that never reads"):
                stream = await lazy_batch_stream(member)
                for k in range(REQUESTS // 1000):  # answers beyond the 256 KiB window
                    await stream.write(_requests(1000 * k, 1000))
                with trio.fail_after(HANG_GUARD):
                    await victim.wait_for(lambda: victim.stats["answer_write_failed"] >= 1)
            assert await wait_end(stream) < REQUESTS * 23
            assert c.authorities[3].name not in victim.bounds()["inbound_streams"]


async def test_raw_socket_flood_never_keeps_a_committee_peer_out(tmp_path: Path) -> None:
    """Item 7: 260 idle sockets on the libp2p port while authority 1 restarts. Its dial
    (played by a host with its PeerId and key while it is down, then the worker itself)
    still gets in; the sockets never hold more than the gate's bound."""
    async with loaded_committee(tmp_path, running=4) as c:
        victim, name1 = transport(c, 0), c.authorities[1].name
        async with (
            keeps_quorum(worker(c, 0), f"{FLOOD_SOCKETS} idle sockets"),
            raw_sockets(address(c, 0), FLOOD_SOCKETS),
        ):
            stopped = worker(c, 1)
            c.stop(1)
            with trio.fail_after(HANG_GUARD):
                await stopped.wait_for(lambda: stopped.store_closed)
                await victim.wait_for(lambda: name1 not in victim.connected_peers())
            async with raw_client(c.root, "a1.libp2p") as redial:  # authority 1's PeerId
                with trio.fail_after(HANG_GUARD):
                    conn = await redial.connect(address(c, 0))
                    payload = redial.signed_handshake(c.keys[1], c.committee)
                    answer = await redial.handshake(conn, payload)
                assert answer is not None and answer.kind is Kind.HANDSHAKE
            await c.start(1)
            await discover(c, [0, 1, 2, 3])
            bounds = victim.bounds()
        assert bounds["gate_peak_pending"] <= MAX_PENDING
        assert victim.rejections["evicted"] >= FLOOD_SOCKETS - LIBP2P.max_handshaking_connections
        assert bounds["connections"] < 20


async def test_handshake_stream_flood_is_not_buffered(tmp_path: Path) -> None:
    """Item 9: after its handshake a member pushes 32 MiB into the handshake stream,
    ignoring Yamux's window. The stream was reset and its data is dropped on arrival
    (today: half-closed, and Yamux buffers it all)."""
    async with loaded_committee(tmp_path, running=3) as c:
        victim = transport(c, 0)
        async with raw_client(tmp_path, "flooder") as client:
            async with keeps_quorum(worker(c, 0), "32 MiB into the handshake stream"):
                with trio.fail_after(HANG_GUARD):
                    conn = await client.connect(address(c, 0))
                    stream = await open_stream_on(conn, HANDSHAKE_PROTOCOL)
                    payload = client.signed_handshake(c.keys[3], c.committee)
                    await stream.write(encode_frame(Kind.HANDSHAKE, 0, payload))
                    assert await read_or_none(stream) is not None
                    await stream.write(encode_frame(Kind.HANDSHAKE_OK, 0))
                    assert await read_or_none(stream) is None  # the victim is done with it
                    muxed = stream.muxed_stream
                    chunk = bytes(64 * 1024)
                    header = struct.pack(
                        YAMUX_HEADER_FORMAT, 0, TYPE_DATA, 0, muxed.stream_id, len(chunk)
                    )
                    for _ in range(512):
                        await muxed.conn._write_frame(header + chunk)
                    # Frames of one connection are handled in order: once this answer
                    # is back, the victim has seen the whole flood.
                    batch = await client.batch_stream(address(c, 0))
                    await batch.write(_requests(1, 1))
                    answer = await read_or_none(batch)
                    assert answer is not None and answer.kind is Kind.RESPONSE
            assert victim.bounds()["yamux_buffered"] < 1 << 20


async def test_a_member_ignoring_our_receive_window_loses_its_connection(tmp_path: Path) -> None:
    """Item 9 on the lean data phase: our Yamux enforces its windows. A member announcing
    a DATA frame beyond what its batch stream may still send is refused from the header
    (counted, connection closed), before any of it is kept; it may redial, that is all."""
    async with loaded_committee(tmp_path, running=3) as c:
        victim = transport(c, 0)
        async with admitted_member(tmp_path, c, 3) as member:
            async with keeps_quorum(worker(c, 0), "a member ignoring the receive window"):
                stream = await batch_stream(member)
                await stream.write(_requests(1, 1))
                answer = await read_or_none(stream)
                assert answer is not None and answer.kind is Kind.RESPONSE
                muxed = stream.muxed_stream
                header = struct.pack(
                    YAMUX_HEADER_FORMAT, 0, TYPE_DATA, 0, muxed.stream_id, DEFAULT_WINDOW + 1
                )
                await muxed.conn._write_frame(header + bytes(64 * 1024))
                await counted(victim, "receive_window_exceeded")
                name = c.authorities[3].name
                with trio.fail_after(HANG_GUARD):
                    await victim.wait_for(lambda: name not in victim.connected_peers())
            assert victim.bounds()["yamux_buffered"] < 1 << 20

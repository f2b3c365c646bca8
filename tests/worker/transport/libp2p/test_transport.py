"""The libp2p transport between real py-libp2p hosts on 127.0.0.1: discovery, restarts,
pipelined batches, refused frames and a clean shutdown."""

from __future__ import annotations

import contextlib
import hashlib
import socket
from pathlib import Path

import pytest
import trio
from libp2p.custom_types import TProtocol

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
from worker.transport.base import RequestFailed, RequestReceived, ResponseReceived, SendRequest
from worker.transport.libp2p.framing import LEN, FrameReader, Kind, encode_frame
from worker.transport.libp2p.host import parse_peer_addr, peer_id_of
from worker.transport.libp2p.transport import Libp2pTransport
from worker.transport.testing.contract import expect, round_trip


async def test_four_workers_authenticate_each_other(tmp_path: Path) -> None:
    p = plan(4, tmp_path)
    async with cluster(p) as c:
        await wait_connected(c, [0, 1, 2, 3])
        peer_ids = {name: peer_id_of(d) for name, d in zip(p.names, p.key_dirs, strict=False)}
        for i in range(4):
            worker = c[i]
            assert isinstance(worker, Libp2pTransport)
            others = set(p.names) - {p.names[i]}
            assert worker.peer_ids() == {name: peer_ids[name] for name in others}
            assert worker.connected_peers() == others
            assert not worker.rejections
        for src in range(4):
            await round_trip(c, src, (src + 1) % 4, request_id=src)


async def test_restart_keeps_the_peer_id_and_is_readmitted(tmp_path: Path) -> None:
    p = plan(2, tmp_path)
    async with cluster(p) as c:
        await wait_connected(c, [0, 1])
        first = c[1]
        assert isinstance(first, Libp2pTransport)
        before = c[0].peer_ids()

        await c.stop(1)  # same key_dir and port: the committee's multiaddr stays valid
        restarted = await c.start(1)
        assert isinstance(restarted, Libp2pTransport)
        assert restarted.peer_id == first.peer_id
        await wait_connected(c, [0, 1])
        assert c[0].peer_ids() == before
        await round_trip(c, 0, 1, request_id=1)

        # Restarted elsewhere (a new port nobody knows): it dials in and is re-admitted.
        await c.stop(1)
        moved = p.build(1, listen_port=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(moved.serve)
            with trio.fail_after(HANG_GUARD):
                await c[0].wait_discovery({p.names[1]})
                await moved.wait_discovery({p.names[0]})
            assert c[0].peer_ids() == before
            c[0].send(SendRequest(2, p.names[1], b"ping"))
            request = await expect(moved, RequestReceived)
            await request.respond(b"pong")
            assert await expect(c[0], ResponseReceived) == ResponseReceived(2, p.names[1], b"pong")
            nursery.cancel_scope.cancel()
        assert not c[0].rejections


async def test_pipelined_batches_both_ways(tmp_path: Path) -> None:
    """Many 1 KB and 500 KB requests in flight at once, in both directions."""
    sizes = [1_000] * 200 + [500_000] * 16
    p = plan(2, tmp_path)
    async with cluster(p) as c:
        await wait_connected(c, [0, 1])

        def payload(src: int, request_id: int) -> bytes:
            return bytes([src, request_id % 251]) * (sizes[request_id] // 2)

        got: list[dict[int, bytes]] = [{}, {}]

        async def route(i: int) -> None:
            """Authority i answers the other's requests and collects its own responses."""
            worker = c[i]
            answered = collected = 0
            with trio.fail_after(HANG_GUARD):
                while answered < len(sizes) or collected < len(sizes):
                    event = await worker.events.receive()
                    if isinstance(event, RequestReceived):
                        answered += 1
                        await event.respond(hashlib.sha256(event.data).digest())
                    else:
                        assert isinstance(event, ResponseReceived), event
                        collected += 1
                        got[i][event.request_id] = event.data

        async with trio.open_nursery() as nursery:
            nursery.start_soon(route, 0)
            nursery.start_soon(route, 1)
            for request_id in range(len(sizes)):
                for src in (0, 1):
                    c[src].send(SendRequest(request_id, p.names[1 - src], payload(src, request_id)))
        for src in (0, 1):
            assert got[src] == {
                rid: hashlib.sha256(payload(src, rid)).digest() for rid in range(len(sizes))
            }


async def test_a_dead_peer_is_counted_not_logged_by_the_library(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Dials to a crashed peer fail and are counted; py-libp2p's own ERROR line for each
    (thousands in a crash scenario; its handler writes to stderr) is not printed."""
    p = plan(2, tmp_path)
    async with cluster(p) as c:
        await wait_connected(c, [0, 1])
        await c.stop(1)
        with trio.fail_after(HANG_GUARD):
            await c[0].wait_for(lambda: p.names[1] not in c[0].connected_peers())
        c[0].send(SendRequest(1, p.names[1], b"x"))
        await expect(c[0], RequestFailed)
        with trio.fail_after(HANG_GUARD):
            await c[0].wait_for(lambda: c[0].stats["dial_failed"] >= 1)
    assert "Failed to open TCP stream" not in capfd.readouterr().err


async def test_outstanding_requests_fail_when_the_peer_dies_then_recover(tmp_path: Path) -> None:
    p = plan(3, tmp_path)
    async with cluster(p) as c:
        await wait_connected(c, [0, 1, 2])
        for request_id in range(10):
            c[0].send(SendRequest(request_id, p.names[1], b"x" * 500_000))
        for _ in range(10):
            await expect(c[1], RequestReceived)  # delivered, never answered
        await c.stop(1)
        failed = [await expect(c[0], RequestFailed) for _ in range(10)]
        assert sorted(f.request_id for f in failed) == list(range(10))
        with trio.fail_after(HANG_GUARD):  # it may still be closing its last connection
            await c[0].wait_for(lambda: p.names[1] not in c[0].connected_peers())
        await round_trip(c, 0, 2, request_id=20)  # the others are unaffected
        await c.start(1)
        await wait_connected(c, [0, 1])  # a send racing the redial would fail "unreachable"
        await round_trip(c, 0, 1, request_id=21)


async def authenticated_raw_client_test(tmp_path: Path, frame: bytes, reason: str) -> None:
    """Authority 2 (not running) is played by a raw client that handshakes properly, then
    sends `frame` on a batch stream: refused with `reason`, and worker 0 keeps serving."""
    p = plan(3, tmp_path)
    async with cluster(p, running=[0, 1]) as c:
        await wait_connected(c, [0, 1])
        server = c[0]
        async with raw_client(tmp_path) as client:
            with trio.fail_after(HANG_GUARD):
                conn = await client.connect(p.addrs[0])
                answer = await client.handshake(
                    conn, client.signed_handshake(p.keys[2], p.committee)
                )
                assert answer is not None and answer.kind is Kind.HANDSHAKE
                await server.wait_for(lambda: p.names[2] in server.peer_ids())

                stream = await client.batch_stream(p.addrs[0])
                await stream.write(frame)
                assert await read_or_none(stream) is None  # reset
                assert server.rejections[reason] == 1
                assert pending_requests(server) == []

                # The same peer, on a new stream, is served normally.
                stream = await client.batch_stream(p.addrs[0])
                await stream.write(encode_frame(Kind.REQUEST, 7, b"fine now"))
                request = await expect(server, RequestReceived)
                assert (request.peer, request.data) == (p.names[2], b"fine now")
                await request.respond(b"served")
                answer = await read_or_none(stream)
                assert answer is not None
                assert (answer.kind, answer.request_id, answer.payload) == (
                    Kind.RESPONSE,
                    7,
                    b"served",
                )
        await round_trip(c, 1, 0, request_id=8)


async def test_oversized_frame_is_refused_from_its_header(tmp_path: Path) -> None:
    too_big = PARAMS.max_message_size + 1
    header = LEN.pack(9 + too_big) + bytes([Kind.REQUEST]) + bytes(8)
    await authenticated_raw_client_test(tmp_path, header + b"x" * 1000, "oversized")


async def test_malformed_frame_is_refused(tmp_path: Path) -> None:
    await authenticated_raw_client_test(
        tmp_path, encode_frame(Kind.RESPONSE, 1, b"?"), "malformed_frame"
    )


async def test_unknown_protocol_is_counted(tmp_path: Path) -> None:
    p = plan(2, tmp_path)
    async with cluster(p) as c:
        await wait_connected(c, [0, 1])
        async with raw_client(tmp_path) as client:
            await client.connect(p.addrs[0])
            with contextlib.suppress(Exception):  # refused: "na"
                await client.host.new_stream(
                    parse_peer_addr(p.addrs[0])[0], [TProtocol("/narwhal/worker/nope/1.0.0")]
                )
            await counted(c[0], "unknown_protocol")
        await round_trip(c, 1, 0, request_id=1)


async def test_cancelled_serve_closes_the_host_and_frees_the_port(tmp_path: Path) -> None:
    p = plan(2, tmp_path)
    async with cluster(p) as c:
        await wait_connected(c, [0, 1])
        await c.stop(1)
        with trio.fail_after(HANG_GUARD):  # the peer sees the connection go
            await c[0].wait_for(lambda: p.names[1] not in c[0].connected_peers())
        with socket.socket() as sock:  # nobody listens there any more
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", p.port(1)))
            sock.listen()


async def test_a_peer_that_half_closes_still_gets_its_answers(tmp_path: Path) -> None:
    """A requester may close its write side (Yamux FIN) after its last request, as
    js-libp2p does when the source it pipes into a stream ends: every answer owed is
    still written, then our FIN ends the stream (not a reset, which would make the peer
    drop the answers it has not read yet)."""
    p = plan(2, tmp_path)
    async with cluster(p, running=[0]) as c:
        server = c[0]
        async with raw_client(tmp_path) as client:
            with trio.fail_after(HANG_GUARD):
                conn = await client.connect(p.addrs[0])
                assert await client.handshake(conn, client.signed_handshake(p.keys[1], p.committee))
                stream = await client.batch_stream(p.addrs[0])
                await stream.write(b"".join(encode_frame(Kind.REQUEST, k, b"tx") for k in (1, 2)))
                await stream.close()
                requests = [await expect(server, RequestReceived) for _ in range(2)]
                for request in requests:
                    await request.respond(b"ack")
                reader = FrameReader(stream, 1 << 20)
                answers = [await reader.read_frame() for _ in requests]
                assert [(a.kind, a.request_id) for a in answers if a] == [
                    (Kind.RESPONSE, 1),
                    (Kind.RESPONSE, 2),
                ]
                assert await reader.read_frame() is None  # our FIN (a reset would raise)

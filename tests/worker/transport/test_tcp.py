"""The TCP baseline against the transport contract, plus what only its wire can get wrong."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from tests.conftest import MakeCommittee
from worker.config import Committee, Parameters
from worker.keys import KeyPair
from worker.transport.base import (
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    SendRequest,
)
from worker.transport.tcp import HEADER, KIND_REQUEST, KIND_RESPONSE, TcpTransport
from worker.transport.testing.contract import (
    MakeCluster,
    ServeCluster,
    TransportCluster,
    TransportContract,
    expect,
    round_trip,
    serve_cluster,
)
from worker.wire import messages as wire

#: The contract pipelines 200 requests before answering any: above the default caps.
PARAMS = Parameters(max_inflight_per_peer=256, max_queued_requests=256)
MAX = PARAMS.max_message_size


class TestTcpContract(TransportContract):
    @pytest.fixture
    def make_cluster(self, make_committee: MakeCommittee) -> MakeCluster:
        @asynccontextmanager
        async def factory(n: int) -> AsyncIterator[TransportCluster]:
            committee, keys = make_committee(n)
            async with tcp_cluster(committee, keys) as cluster:
                yield cluster

        return factory


@asynccontextmanager
async def tcp_cluster(
    committee: Committee,
    keys: list[KeyPair],
    running: list[int] | None = None,
    params: Parameters = PARAMS,
) -> AsyncIterator[ServeCluster]:
    def build(i: int) -> TcpTransport:
        return TcpTransport(committee, keys[i].name, 0, params)

    async with serve_cluster([k.name for k in keys], build, running) as cluster:
        yield cluster


# -- a hand-rolled peer, to put arbitrary bytes on the wire ----------------------------
def frame(kind: int, request_id: int, payload: bytes) -> bytes:
    return HEADER.pack(9 + len(payload), kind, request_id) + payload


def hello(key: KeyPair, worker_id: int = 0) -> bytes:
    return frame(KIND_REQUEST, 0, wire.encode(wire.Hello(key.public_bytes, worker_id)))


async def connect(address: str) -> trio.SocketStream:
    host, _, port = address.rpartition(":")
    return await trio.open_tcp_stream(host, int(port))


async def wait_closed(stream: trio.SocketStream) -> None:
    """Read until the far end closes (FIN, or RST when it left our bytes unread)."""
    with trio.fail_after(10):
        try:
            while await stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass
    await stream.aclose()


async def receive_exactly(stream: trio.SocketStream, n: int) -> bytes:
    data = bytearray()
    while len(data) < n:
        chunk = await stream.receive_some(n - len(data))
        assert chunk, "peer closed early"
        data += chunk
    return bytes(data)


async def read_frame(stream: trio.SocketStream) -> tuple[int, int, bytes]:
    length, kind, request_id = HEADER.unpack(await receive_exactly(stream, HEADER.size))
    return kind, request_id, await receive_exactly(stream, length - 9)


# -- refused inbound traffic -------------------------------------------------------------
BAD_FRAMES = {
    "oversized length after hello": (True, HEADER.pack(MAX + 10, 0, 1), "oversized"),
    "http before hello": (False, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "oversized"),
    "frame shorter than its header": (True, b"\x00\x00\x00\x02ab", "malformed_frame"),
    "unknown kind": (True, frame(7, 1, b"x"), "malformed_frame"),
}


@pytest.mark.parametrize("with_hello,data,reason", BAD_FRAMES.values(), ids=list(BAD_FRAMES))
async def test_bad_frame_closes_that_connection_only(
    make_committee: MakeCommittee, with_hello: bool, data: bytes, reason: str
) -> None:
    committee, keys = make_committee(3)
    async with tcp_cluster(committee, keys, running=[1, 2]) as cluster:
        raw = await connect(cluster.addresses[1])
        await raw.send_all((hello(keys[0]) if with_hello else b"") + data)
        await wait_closed(raw)
        assert cluster[1].rejections == {reason: 1}
        await round_trip(cluster, 2, 1, request_id=1)


def _with_request_id(data: bytes, request_id: int) -> bytes:
    return data[:5] + request_id.to_bytes(8, "big") + data[13:]


def _as_response(data: bytes) -> bytes:
    return data[:4] + bytes([KIND_RESPONSE]) + data[5:]


BAD_HELLOS: dict[str, tuple[Callable[[KeyPair], bytes], str]] = {
    "not msgpack": (lambda k: frame(KIND_REQUEST, 0, b"\xc1"), "bad_hello"),
    "not a hello": (
        lambda k: frame(KIND_REQUEST, 0, wire.encode(wire.Ack(bytes(32)))),
        "bad_hello",
    ),
    "nonzero request id": (lambda k: _with_request_id(hello(k), 9), "bad_hello"),
    "response kind": (lambda k: _as_response(hello(k)), "bad_hello"),
    "non-member key": (lambda k: hello(KeyPair.generate()), "unknown_peer"),
    "other worker id": (lambda k: hello(k, worker_id=1), "unknown_peer"),
}


@pytest.mark.parametrize("first_frame,reason", BAD_HELLOS.values(), ids=list(BAD_HELLOS))
async def test_bad_introduction_is_refused(
    make_committee: MakeCommittee, first_frame: Callable[[KeyPair], bytes], reason: str
) -> None:
    committee, keys = make_committee(3)
    async with tcp_cluster(committee, keys, running=[1, 2]) as cluster:
        raw = await connect(cluster.addresses[1])
        await raw.send_all(first_frame(keys[0]) + frame(KIND_REQUEST, 1, b"smuggled"))
        await wait_closed(raw)
        assert cluster[1].rejections == {reason: 1}
        await round_trip(cluster, 2, 1, request_id=1)  # and nothing smuggled came out first


async def test_hello_from_myself_is_refused(make_committee: MakeCommittee) -> None:
    committee, keys = make_committee(2)
    async with tcp_cluster(committee, keys, running=[1]) as cluster:
        raw = await connect(cluster.addresses[1])
        await raw.send_all(hello(keys[1]))
        await wait_closed(raw)
        assert cluster[1].rejections == {"unknown_peer": 1}


async def test_silent_dialer_is_dropped(make_committee: MakeCommittee) -> None:
    committee, keys = make_committee(2)
    params = Parameters(request_timeout=50)
    async with tcp_cluster(committee, keys, running=[1], params=params) as cluster:
        raw = await connect(cluster.addresses[1])
        await wait_closed(raw)
        assert cluster[1].rejections == {"bad_hello": 1}


async def test_response_on_inbound_link_is_counted(make_committee: MakeCommittee) -> None:
    committee, keys = make_committee(2)
    async with tcp_cluster(committee, keys, running=[1]) as cluster:
        raw = await connect(cluster.addresses[1])
        await raw.send_all(
            hello(keys[0]) + frame(KIND_RESPONSE, 4, b"unasked") + frame(KIND_REQUEST, 5, b"q")
        )
        request = await expect(cluster[1], RequestReceived)
        assert request.data == b"q"
        assert cluster[1].rejections == {"unknown_request_id": 1}
        await request.respond(b"a")
        assert await read_frame(raw) == (KIND_RESPONSE, 5, b"a")
        await raw.aclose()


async def test_respond_on_closed_connection_is_counted(make_committee: MakeCommittee) -> None:
    committee, keys = make_committee(2)
    async with tcp_cluster(committee, keys, running=[1]) as cluster:
        raw = await connect(cluster.addresses[1])
        await raw.send_all(
            hello(keys[0]) + frame(KIND_REQUEST, 1, b"q") + HEADER.pack(MAX + 10, 0, 2)
        )
        await wait_closed(raw)  # the oversized frame made it hang up
        request = await expect(cluster[1], RequestReceived)
        await request.respond(b"nobody to hear it")
        assert cluster[1].rejections == {"oversized": 1, "respond_failed": 1}


# -- our side of the wire, seen by a hand-rolled peer ------------------------------------
async def test_dialer_introduces_itself_and_ignores_unknown_response_ids(
    make_committee: MakeCommittee,
) -> None:
    committee, keys = make_committee(2)
    host, port = committee.worker(keys[1].name, 0).worker_hostport
    listeners = await trio.open_tcp_listeners(port, host=host)
    async with tcp_cluster(committee, keys, running=[0]) as cluster:
        a = cluster[0]
        a.send(SendRequest(5, keys[1].name, b"req"))
        with trio.fail_after(10):
            peer = await listeners[0].accept()
        kind, request_id, payload = await read_frame(peer)
        assert (kind, request_id) == (KIND_REQUEST, 0)
        assert wire.decode(payload, 1024) == wire.Hello(keys[0].public_bytes, 0)
        assert await read_frame(peer) == (KIND_REQUEST, 5, b"req")
        await peer.send_all(frame(KIND_RESPONSE, 99, b"?") + frame(KIND_RESPONSE, 5, b"ok"))
        assert await expect(a, ResponseReceived) == ResponseReceived(5, keys[1].name, b"ok")
        assert a.rejections == {"unknown_request_id": 1}
        assert a.connected_peers() == {keys[1].name}
        await peer.aclose()
    for listener in listeners:
        await listener.aclose()


async def test_requests_arrive_in_send_order(make_committee: MakeCommittee) -> None:
    committee, keys = make_committee(2)
    async with tcp_cluster(committee, keys) as cluster:
        for request_id in range(50):
            cluster[0].send(SendRequest(request_id, keys[1].name, b"%d" % request_id))
        received = [await expect(cluster[1], RequestReceived) for _ in range(50)]
        assert [r.data for r in received] == [b"%d" % i for i in range(50)]


async def test_largest_allowed_message_round_trips(make_committee: MakeCommittee) -> None:
    committee, keys = make_committee(2)
    big = bytes(range(256)) * (MAX // 256)
    async with tcp_cluster(committee, keys) as cluster:
        cluster[0].send(SendRequest(1, keys[1].name, big))
        request = await expect(cluster[1], RequestReceived)
        assert request.data == big
        await request.respond(big)
        assert (await expect(cluster[0], ResponseReceived)).data == big


async def test_refused_before_the_wire(make_committee: MakeCommittee) -> None:
    committee, keys = make_committee(2)
    async with tcp_cluster(committee, keys) as cluster:
        a, me, peer = cluster[0], keys[0].name, keys[1].name
        a.send(SendRequest(1, me, b"to myself"))
        a.send(SendRequest(2, peer, bytes(MAX + 1)))
        a.send(SendRequest(-1, peer, b"bad id"))
        a.send(SendRequest(3, "not-a-member", b"x"))
        errors = [await expect(a, RequestFailed) for _ in range(4)]
        assert [(f.request_id, f.peer) for f in errors] == [
            (1, me),
            (2, peer),
            (-1, peer),
            (3, "not-a-member"),
        ]
        assert errors[0].error == errors[3].error == "unknown peer"
        assert a.connected_peers() == set()  # refusals never dialed


async def test_stopped_transport_releases_its_port(make_committee: MakeCommittee) -> None:
    committee, keys = make_committee(2)
    async with tcp_cluster(committee, keys) as cluster:
        await round_trip(cluster, 0, 1, request_id=1)
        address = cluster.addresses[1]
        await cluster.stop(1)
        await trio.testing.wait_all_tasks_blocked()  # let worker 0 read the hang-up
        assert keys[1].name not in cluster[0].connected_peers()
        with pytest.raises(OSError):
            await connect(address)
        await cluster.start(1)  # same port, straight away
        await round_trip(cluster, 0, 1, request_id=2)


async def test_unanswered_request_times_out(make_committee: MakeCommittee) -> None:
    """The one timeout policy (worker/core/requests.py): fail, forget, count a late answer."""
    committee, keys = make_committee(2)
    params = Parameters(request_timeout=100)
    async with tcp_cluster(committee, keys, params=params) as cluster:
        cluster[0].send(SendRequest(1, keys[1].name, b"slow"))
        request = await expect(cluster[1], RequestReceived)
        failed = await expect(cluster[0], RequestFailed)
        assert (failed.request_id, failed.error) == (1, "timeout")
        await request.respond(b"too late")
        await round_trip(cluster, 1, 0, request_id=2)  # the link is still up
        await round_trip(cluster, 0, 1, request_id=3)
        assert cluster[0].rejections == {"unknown_request_id": 1}

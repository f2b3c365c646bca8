"""A 4-authority committee on loopback TCP under steady client load, and attackers.

Each attack test holds its attack while `quorum_during` waits for the attacked worker to
bring N more batches to quorum, then prints the largest gap between quorum records
(measured and reported, not asserted). Memory is judged on the transport's bounded
buffers and queues (their high-water marks), not on RSS.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from tests.worker.harness import TEST_PARAMS, Authority, Cluster, cluster, transactions
from worker.keys import decode_public_key
from worker.streams import STREAM_ERRORS
from worker.transport.tcp import TcpTransport
from worker.wire import messages as wire
from worker.wire.frames import Kind, encode_frame
from worker.worker import Worker

ATTACK_PARAMS = TEST_PARAMS.model_copy(
    update={
        "write_timeout": 1_000,
        "frame_timeout": 1_000,
        "idle_timeout": 1_000,
        "max_client_connections": 8,
        "max_handshaking_connections": 4,
        "max_inflight_per_peer": 8,
        "max_queued_requests": 16,
        "max_metrics_connections": 2,
    }
)
#: Guard against a hung test (not an assertion on time).
GUARD = 90


async def _load(address: str) -> None:
    """One client sending transactions for as long as the test runs (reconnecting)."""
    host, _, port = address.rpartition(":")
    first = 0
    while True:
        try:
            stream = await trio.open_tcp_stream(host, int(port))
        except OSError:
            await trio.sleep(0.05)
            continue
        try:
            async with stream:
                while True:
                    await stream.send_all(transactions(50, 100, first=first))
                    first += 50
                    await trio.sleep(0.01)  # pacing, not synchronisation
        except STREAM_ERRORS:
            pass


@asynccontextmanager
async def under_load(
    tmp_path: Path, params=ATTACK_PARAMS, start: int | None = None
) -> AsyncIterator[Cluster]:
    async with (
        cluster(tmp_path, params=params, memory=False, start=start) as c,
        trio.open_nursery() as nursery,
    ):
        c.load_nursery = nursery  # type: ignore[attr-defined]
        for auth in c.authorities:
            if auth.worker is not None:
                nursery.start_soon(_load, auth.worker.addresses.transactions)
        yield c
        nursery.cancel_scope.cancel()


async def start_loaded(c: Cluster, index: int, **options: bool) -> Authority:
    """Start authority `index` late (e.g. with metrics, or an injected store), loaded too."""
    auth = await c.start(index, **options)
    assert auth.worker is not None
    c.load_nursery.start_soon(_load, auth.worker.addresses.transactions)  # type: ignore[attr-defined]
    return auth


async def quorum_during(worker: Worker, batches: int, attack: str) -> float:
    """Wait until `batches` more own batches reached quorum; print and return the gap."""
    start = len(worker.records)
    await worker.wait_for(lambda: len(worker.records) >= start + batches)
    times = [r.quorum_at for r in list(worker.records)[max(0, start - 1) :]]
    gap = max((b - a for a, b in itertools.pairwise(times)), default=0.0)
    print(f"\n{attack}: {batches} batches reached quorum; largest gap {gap:.3f} s")
    assert not worker.store_closed  # still running
    return gap


async def until(predicate: Callable[[], bool]) -> None:
    """For state with no event to await (kernel buffers, sockets closed by the worker)."""
    while not predicate():
        await trio.sleep(0.02)


def tcp(worker: Worker) -> TcpTransport:
    network = worker._network
    assert isinstance(network, TcpTransport)
    return network


def hello_frame(name: str) -> bytes:
    """The TCP Hello, forged for any authority (the baseline authenticates nothing)."""
    return encode_frame(Kind.REQUEST, 0, wire.encode(wire.Hello(decode_public_key(name), 0)))


def request_frame(request_id: int, payload: bytes) -> bytes:
    return encode_frame(Kind.REQUEST, request_id, payload)


async def connect(address: str, rcvbuf: int | None = None) -> trio.SocketStream:
    host, _, port = address.rpartition(":")
    sock = trio.socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, rcvbuf)
    await sock.connect((host, int(port)))
    return trio.SocketStream(sock)


async def closed_by_peer(stream: trio.SocketStream) -> None:
    """Return once the other side closed the connection (whatever it sent before)."""
    try:
        while await stream.receive_some(65536):
            pass
    except STREAM_ERRORS:
        pass


def response(frame: bytes) -> tuple[int, bytes]:
    """(request_id, payload) of a response frame read whole."""
    _, kind, request_id = struct.unpack_from(">IBQ", frame)
    assert kind == Kind.RESPONSE
    return request_id, frame[13:]

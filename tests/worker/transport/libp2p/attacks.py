"""Helpers for the libp2p hardening tests (no tests here): a 4-authority committee of
real workers over libp2p on loopback, under load, and the attackers that hit it.

`loaded_committee` starts the workers with the worker harness (tests/worker/harness.py)
and feeds authority 0 transactions for as long as the test runs; `keeps_quorum` asserts
that authority 0 still reaches quorum while an attack goes on and prints the longest gap
(never asserted on: the machine is shared). `Member` is an admitted committee member
played by a bare libp2p host (it signs with the authority's key), `raw_sockets` a flood
of idle TCP sockets.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio
from libp2p.abc import IMuxedStream, INetConn, INetStream
from libp2p.protocol_muxer.multiselect import MULTISELECT_PROTOCOL_ID as MULTISTREAM
from libp2p.stream_muxer.exceptions import MuxedStreamEOF, MuxedStreamReset
from libp2p.utils import encode_varint_prefixed

from tests.worker.harness import TEST_PARAMS, Cluster, cluster, transactions
from tests.worker.transport.libp2p.support import HANG_GUARD, RawClient, raw_client
from worker.config import Parameters
from worker.transport.libp2p.framing import Kind
from worker.transport.libp2p.transport import BATCH_PROTOCOL, Libp2pTransport
from worker.worker import Worker

LIBP2P = Parameters(**{**TEST_PARAMS.model_dump(), "transport": "libp2p", "write_timeout": 2_000})
#: Quorum batches authority 0 must reach while an attack is on.
DURING_ATTACK = 5


def worker(c: Cluster, i: int) -> Worker:
    w = c.authorities[i].worker
    assert w is not None
    return w


def transport(c: Cluster, i: int) -> Libp2pTransport:
    inner = worker(c, i).transport.inner  # type: ignore[attr-defined]
    assert isinstance(inner, Libp2pTransport)
    return inner


def address(c: Cluster, i: int) -> str:
    info = c.authorities[i].info
    assert info is not None
    return str(info["worker_to_worker"])


async def discover(c: Cluster, indices: list[int]) -> None:
    """Tell the listed workers where the others listen; wait until all are connected."""
    addrs = {c.authorities[i].name: address(c, i) for i in indices}
    for i in indices:
        worker(c, i).add_peer_addrs(addrs)
    with trio.fail_after(HANG_GUARD):
        for i in indices:
            await worker(c, i).wait_discovery(set(addrs))


async def _load(w: Worker) -> None:
    """A steady trickle of transactions: about one small batch per max_batch_delay."""
    stream = await trio.open_tcp_stream(*_hostport(w.addresses.transactions))
    async with stream:
        for k in itertools.count():
            await stream.send_all(transactions(20, 100, first=20 * k))
            await trio.sleep(0.02)


def _hostport(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)


@asynccontextmanager
async def loaded_committee(tmp: Path, running: int = 4) -> AsyncIterator[Cluster]:
    """Four authorities (the first `running` started), authority 0 under load."""
    async with cluster(tmp, n=4, params=LIBP2P, start=running, memory=False) as c:
        await discover(c, list(range(running)))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_load, worker(c, 0))
            with trio.fail_after(HANG_GUARD):
                await worker(c, 0).wait_for(lambda: len(worker(c, 0).records) > 0)
            yield c
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def keeps_quorum(w: Worker, label: str) -> AsyncIterator[None]:
    """The body is the attack; before it ends, `w` must reach DURING_ATTACK more quorums."""
    start, before = time.time(), len(w.records)
    yield
    with trio.fail_after(HANG_GUARD):
        await w.wait_for(lambda: len(w.records) >= before + DURING_ATTACK)
    end = time.time()
    times = [start, *sorted(r.quorum_at for r in w.records if r.quorum_at >= start), end]
    gap = max(b - a for a, b in itertools.pairwise(times))
    print(
        f"\n{label}: {len(w.records) - before} batches reached quorum during the attack "
        f"({end - start:.1f}s); longest gap {gap:.2f}s"
    )


@dataclass
class Member:
    """A bare host admitted as committee authority `index` (which is not running)."""

    client: RawClient
    conn: INetConn
    target: str


async def _swallow(stream: INetStream) -> None:
    """Take the victim's batches and never answer (they time out there)."""
    with contextlib.suppress(Exception):
        while await stream.read(1 << 20):
            pass


@asynccontextmanager
async def admitted_member(
    tmp: Path, c: Cluster, index: int, target: int = 0
) -> AsyncIterator[Member]:
    async with raw_client(tmp, f"member{index}") as client:
        client.host.set_stream_handler(BATCH_PROTOCOL, _swallow)  # the victim's batches
        with trio.fail_after(HANG_GUARD):
            conn = await client.connect(address(c, target))
            payload = client.signed_handshake(c.keys[index], c.committee)
            answer = await client.handshake(conn, payload)
            assert answer is not None and answer.kind is Kind.HANDSHAKE
            victim = transport(c, target)
            await victim.wait_for(lambda: c.authorities[index].name in victim.peer_ids())
        yield Member(client, conn, address(c, target))


@asynccontextmanager
async def raw_sockets(address: str, count: int) -> AsyncIterator[list[trio.SocketStream]]:
    """`count` TCP connections to the libp2p port that never send a byte."""
    multi = address.split("/")
    host, port = multi[2], int(multi[4])
    socks: list[trio.SocketStream] = []
    try:
        for _ in range(count):
            socks.append(await trio.open_tcp_stream(host, port))
        yield socks
    finally:
        for s in socks:
            await trio.aclose_forcefully(s)


async def batch_stream(member: Member) -> INetStream:
    return await member.client.batch_stream(member.target)


def _multistream(message: str) -> bytes:
    data = (message + "\n").encode()
    return encode_varint_prefixed(data)


async def lazy_batch_stream(member: Member) -> IMuxedStream:
    """A batch stream opened without reading anything, not even multistream's answers:
    its Yamux receive window never grows past the initial 256 KiB."""
    stream = await member.conn.muxed_conn.open_stream()
    await stream.write(_multistream(MULTISTREAM) + _multistream(BATCH_PROTOCOL))
    return stream


async def wait_end(stream: IMuxedStream) -> int:
    """Read until the stream ends (reset; once drained Yamux forgets it: EOF); the
    bytes read before. A stream nobody ends hangs here."""
    total = 0
    with trio.fail_after(HANG_GUARD):
        while True:
            try:
                total += len(await stream.read(1 << 20))
            except (MuxedStreamReset, MuxedStreamEOF):
                return total

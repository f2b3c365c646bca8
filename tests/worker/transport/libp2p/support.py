"""Helpers for the libp2p transport tests (no tests here).

`plan(n, tmp)` lays out a committee whose workers' libp2p addresses are fixed in advance
(the committee's worker_to_worker ports, PeerIds from per-worker key directories), so a
stopped worker restarts on the same multiaddr. `RawClient` speaks the wire by hand to
play the misbehaving peers the transport must refuse.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
from libp2p import new_host
from libp2p.abc import IHost, INetConn, INetStream, INetwork, INotifee
from libp2p.crypto.keys import KeyPair as HostKeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from cluster.committee import make_local_committee
from worker.config import Committee, Parameters
from worker.keys import KeyPair
from worker.transport.base import RequestReceived, TransportEvent
from worker.transport.libp2p.framing import Frame, FrameReader, Kind, encode_frame
from worker.transport.libp2p.handshake import make_handshake
from worker.transport.libp2p.host import (
    connection_config,
    dialable_addr,
    listen_addr,
    load_or_create_identity,
    open_stream_on,
    parse_peer_addr,
    peer_id_of,
    tcp_multiaddr,
)
from worker.transport.libp2p.transport import (
    BATCH_PROTOCOL,
    HANDSHAKE_PROTOCOL,
    Libp2pTransport,
)
from worker.transport.testing.contract import ServeCluster, serve_cluster

#: Fast redials for tests; everything else is the default.
PARAMS = Parameters(retry_initial_delay=50, retry_max_delay=500)
#: Only a guard against hangs, never used to synchronise.
HANG_GUARD = 20.0


@dataclass
class Plan:
    committee: Committee
    keys: list[KeyPair]
    key_dirs: list[Path]
    addrs: list[str]  # multiaddr of worker i, /p2p/ suffix included

    @property
    def names(self) -> list[str]:
        return [k.name for k in self.keys]

    def port(self, i: int) -> int:
        return self.committee.worker(self.names[i], 0).worker_hostport[1]

    def peer_addrs(self, i: int) -> dict[str, str]:
        return {
            name: addr
            for j, (name, addr) in enumerate(zip(self.names, self.addrs, strict=False))
            if j != i
        }

    def build(
        self, i: int, params: Parameters = PARAMS, key_dir: Path | None = None, **kwargs: Any
    ) -> Libp2pTransport:
        """Authority i's transport; `key_dir` gives it another libp2p identity."""
        kwargs = {"peer_addrs": self.peer_addrs(i), "listen_port": self.port(i), **kwargs}
        key_dir = key_dir or self.key_dirs[i]
        return Libp2pTransport(
            self.committee, self.names[i], 0, params, self.keys[i], key_dir, **kwargs
        )


def plan(n: int, tmp: Path, keys: list[KeyPair] | None = None) -> Plan:
    committee, keys = make_local_committee(n, keys=keys)
    key_dirs = [tmp / f"worker{i}" for i in range(n)]
    addrs = []
    for i, key in enumerate(keys):
        port = committee.worker(key.name, 0).worker_hostport[1]
        addrs.append(tcp_multiaddr("127.0.0.1", port, peer_id_of(key_dirs[i])))
    return Plan(committee, keys, key_dirs, addrs)


@asynccontextmanager
async def cluster(
    p: Plan, running: list[int] | None = None, build: Callable[[int], Libp2pTransport] | None = None
) -> AsyncIterator[ServeCluster]:
    async with serve_cluster(p.names, build or p.build, running) as c:
        yield c


async def wait_connected(c: ServeCluster, indices: list[int]) -> None:
    """Every listed worker is connected and authenticated to every other listed worker."""
    with trio.fail_after(HANG_GUARD):
        for i in indices:
            transport = c[i]
            assert isinstance(transport, Libp2pTransport)
            await transport.wait_discovery({c.names[j] for j in indices if j != i})


def pending_requests(transport: Libp2pTransport) -> list[RequestReceived]:
    """RequestReceived events already queued (none may appear from refused peers)."""
    found: list[RequestReceived] = []
    while True:
        try:
            event: TransportEvent = transport.events.receive_nowait()
        except trio.WouldBlock:
            return found
        if isinstance(event, RequestReceived):
            found.append(event)


async def counted(transport: Libp2pTransport, reason: str, at_least: int = 1) -> int:
    with trio.fail_after(HANG_GUARD):
        await transport.wait_for(lambda: transport.rejections[reason] >= at_least)
    return transport.rejections[reason]


class _Disconnects(INotifee):
    """Wakes waiters whenever the swarm has forgotten a connection."""

    def __init__(self) -> None:
        self.changed = trio.Event()

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self.changed.set()
        self.changed = trio.Event()

    async def connected(self, network: INetwork, conn: INetConn) -> None: ...
    async def opened_stream(self, network: INetwork, stream: INetStream) -> None: ...
    async def closed_stream(self, network: INetwork, stream: INetStream) -> None: ...
    async def listen(self, network: INetwork, multiaddr: Any) -> None: ...
    async def listen_close(self, network: INetwork, multiaddr: Any) -> None: ...


class RawClient:
    """A bare stock libp2p host (Noise + Yamux) that speaks the worker protocols by hand."""

    def __init__(self, host: IHost) -> None:
        self.host = host
        self.peer_id = host.get_id()
        self._disconnects = _Disconnects()
        host.get_network().register_notifee(self._disconnects)

    async def connect(self, addr: str) -> INetConn:
        """A new connection (a refused one may still be on its way out: wait for that)."""
        peer_id, maddr = parse_peer_addr(addr)
        network = self.host.get_network()
        while any(conn.is_closed for conn in network.get_connections(peer_id)):
            await self._disconnects.changed.wait()
        network.unblock_peer(peer_id)  # type: ignore[attr-defined]
        await self.host.connect(PeerInfo(peer_id, [maddr]))
        live = [conn for conn in network.get_connections(peer_id) if not conn.is_closed]
        if not live:
            raise ConnectionRefusedError("closed right after Noise (e.g. stranger_limit)")
        return live[0]

    async def handshake(self, conn: INetConn, payload: bytes, confirm: bool = True) -> Frame | None:
        """Send a HANDSHAKE payload; return the answer (None: refused), then confirm."""
        stream = await open_stream_on(conn, HANDSHAKE_PROTOCOL)
        await stream.write(encode_frame(Kind.HANDSHAKE, 0, payload))
        answer = await read_or_none(stream)
        if answer is not None and confirm:
            await stream.write(encode_frame(Kind.HANDSHAKE_OK, 0))
        with contextlib.suppress(Exception):
            await stream.close()
        return answer

    def signed_handshake(self, key: KeyPair, committee: Committee, worker_id: int = 0) -> bytes:
        return make_handshake(key, self.peer_id.to_bytes(), worker_id, committee.epoch)

    async def batch_stream(self, addr: str) -> INetStream:
        peer_id, _ = parse_peer_addr(addr)
        return await self.host.new_stream(peer_id, [BATCH_PROTOCOL])

    async def try_request(self, addr: str, data: bytes, request_id: int = 1) -> Frame | None:
        """Send one batch request; its answer, or None if the stream was refused
        (reset during negotiation, before the write, or before the answer)."""
        return await try_request(self.host, parse_peer_addr(addr)[0], data, request_id)


async def try_request(host: IHost, peer_id: ID, data: bytes, request_id: int = 1) -> Frame | None:
    try:
        stream = await host.new_stream(peer_id, [BATCH_PROTOCOL])
        await stream.write(encode_frame(Kind.REQUEST, request_id, data))
    except Exception:  # refused while negotiating or before we could write
        return None
    return await read_or_none(stream)


async def read_or_none(stream: INetStream, max_payload: int = 1 << 20) -> Frame | None:
    """The next frame, or None if the other side ended or reset the stream."""
    try:
        return await FrameReader(stream, max_payload).read_frame()
    except Exception:  # reset, closed connection: the peer refused
        return None


def stock_host(identity: HostKeyPair) -> IHost:
    """A py-libp2p host as the library ships it: TCP + its own Noise and Yamux."""
    noise = NoiseTransport(identity, noise_privkey=create_x25519_key_pair().private_key)
    return new_host(
        key_pair=identity,
        sec_opt={TProtocol(NOISE_PROTOCOL_ID): noise},
        muxer_opt={TProtocol(YAMUX_PROTOCOL_ID): Yamux},
        connection_config=connection_config(),
    )


@asynccontextmanager
async def raw_client(tmp: Path, name: str = "raw") -> AsyncIterator[RawClient]:
    """A stock py-libp2p host (so it can also break Yamux's rules, e.g. ignore windows)."""
    host = stock_host(load_or_create_identity(tmp / name))
    async with host.run([listen_addr("127.0.0.1")]):
        assert dialable_addr(host)
        try:
            yield RawClient(host)
        finally:
            with trio.CancelScope(shield=True):
                await host.close()

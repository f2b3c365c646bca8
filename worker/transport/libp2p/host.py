"""Building the worker's libp2p host: TCP + TLS or Noise + Yamux only, with a persisted identity.

py-libp2p's defaults accept plaintext and mplex (see docs/libp2p-protocol.md), so the
security and muxer options are always explicit here. py-libp2p dials, listens, runs
Noise and multistream-select; TLS's handshake is OpenSSL's, driven by us
(tls_handshake.py); the Yamux data phase is ours (muxer.py), installed on this host
only. Both securities are offered, the configured one first: a dial proposes it, and
falls back to the other if the peer refuses it. The host identity is an ed25519 key of
its own, separate from the authority key, kept in `key_dir` so a restarted worker keeps
its PeerId.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import (
    IHost,
    IMultiselectCommunicator,
    IMuxedConn,
    INetConn,
    INetStream,
    INetwork,
    INotifee,
    ISecureConn,
)
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair as HostKeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import StreamHandlerFn, TProtocol
from libp2p.identity_utils import load_identity, save_identity
from libp2p.network.config import ConnectionConfig
from libp2p.peer.id import ID
from libp2p.protocol_muxer.multiselect import PROTOCOL_NOT_FOUND_MSG, Multiselect
from libp2p.protocol_muxer.multiselect_client import MultiselectClient
from libp2p.protocol_muxer.multiselect_communicator import MultiselectCommunicator
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.muxer_multistream import MuxerMultistream
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID

from worker.transport.libp2p.muxer import muxer_factory
from worker.transport.libp2p.tls_handshake import PROTOCOL_ID as TLS_PROTOCOL_ID
from worker.transport.libp2p.tls_handshake import TlsSecurity

IDENTITY_FILE = "libp2p_identity.key"
Security = Literal["tls", "noise"]
NEGOTIATE_TIMEOUT = 10
#: py-libp2p logs each failed dial and each broken negotiation at ERROR, then raises:
#: the transport counts those (`dial_failed`, refusals) and backs off, so the library's
#: lines only buried a run's output (thousands per crashed peer in a scenario).
QUIETED_LOGGERS = ("libp2p.transport.tcp.tcp", "libp2p.protocol_muxer.multiselect_client")
for _name in QUIETED_LOGGERS:
    logging.getLogger(_name).setLevel(logging.CRITICAL)


def load_or_create_identity(key_dir: Path) -> HostKeyPair:
    """The host key from `key_dir`, created (atomically, mode 0600) on first use."""
    path = Path(key_dir) / IDENTITY_FILE
    if path.exists():
        return load_identity(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pair = create_new_key_pair()
    tmp = path.with_suffix(".tmp")
    save_identity(pair, tmp)
    os.replace(tmp, path)
    return pair


def peer_id_of(key_dir: Path) -> str:
    """The PeerId a transport using `key_dir` will have (creating its key if needed)."""
    return str(ID.from_pubkey(load_or_create_identity(key_dir).public_key))


def tcp_multiaddr(host: str, port: int, peer_id: str) -> str:
    return f"/ip4/{host}/tcp/{port}/p2p/{peer_id}"


def connection_config() -> ConnectionConfig:
    """One connection per peer avoids the extra 250 ms happy-eyeballs dial delay."""
    return ConnectionConfig(max_connections_per_peer=1)


class MuxerNegotiation(MuxerMultistream):
    """py-libp2p's muxer negotiation (multistream-select), building what was negotiated.

    py-libp2p 0.8.1 builds its own `Yamux` for `/yamux/1.0.0` whatever the options say;
    this builds the class or factory the options name, so each host chooses its muxer
    (a stock py-libp2p host in the same process keeps stock Yamux)."""

    async def new_conn(self, conn: ISecureConn, peer_id: ID) -> IMuxedConn:
        """As py-libp2p's, minus its special case for Yamux."""
        protocol, build = await self._selector.select(
            conn, conn.is_initiator, self.negotiate_timeout
        )
        return self._annotate_connection(build(conn, peer_id), conn, protocol)


def security_options(identity: HostKeyPair, preferred: Security) -> dict[TProtocol, Any]:
    """TLS and Noise, `preferred` first (multistream-select proposes them in order)."""
    noise = NoiseTransport(identity, noise_privkey=create_x25519_key_pair().private_key)
    both = {TLS_PROTOCOL_ID: TlsSecurity(identity), TProtocol(NOISE_PROTOCOL_ID): noise}
    first = TLS_PROTOCOL_ID if preferred == "tls" else TProtocol(NOISE_PROTOCOL_ID)
    return {first: both.pop(first), **both}


def build_host(
    identity: HostKeyPair,
    *,
    security: Security = "noise",
    on_refused: Callable[[str], None] | None = None,
    **muxer: Any,
) -> IHost:
    """A host that negotiates TLS or Noise and Yamux only (plaintext and mplex peers
    cannot connect), `security` proposed first, whose Yamux is ours (`LeanYamux`, options
    `muxer`); `on_refused(reason)` counts peers that broke Yamux, Noise or TLS records."""
    muxers = {TProtocol(YAMUX_PROTOCOL_ID): muxer_factory(on_refused=on_refused, **muxer)}
    host = new_host(
        key_pair=identity,
        sec_opt=security_options(identity, security),
        muxer_opt=muxers,  # type: ignore[arg-type]
        connection_config=connection_config(),
        negotiate_timeout=NEGOTIATE_TIMEOUT,
    )
    upgrader = host.get_network().upgrader  # type: ignore[attr-defined]
    upgrader.muxer_multistream = MuxerNegotiation(muxers, NEGOTIATE_TIMEOUT)  # type: ignore[arg-type]
    return host


def listen_addr(host: str, port: int = 0) -> multiaddr.Multiaddr:
    return multiaddr.Multiaddr(f"/ip4/{host}/tcp/{port}")


def dialable_addr(host: IHost) -> str:
    """The bound TCP address (real port, never 0) with the `/p2p/<PeerId>` suffix."""
    for addr in host.get_addrs():
        text = str(addr)
        if "/tcp/" in text and "/tcp/0/" not in text:
            return text if "/p2p/" in text else f"{text}/p2p/{host.get_id()}"
    raise RuntimeError("the host has no bound TCP address")


async def open_stream_on(conn: INetConn, protocol: TProtocol) -> INetStream:
    """Open a stream on one given connection (not the swarm's pick): handshakes are per
    connection, so the stream must travel on the connection it vouches for."""
    stream = await conn.new_stream()
    try:
        chosen = await MultiselectClient().select_one_of(
            [protocol], MultiselectCommunicator(stream), NEGOTIATE_TIMEOUT
        )
    except BaseException:
        with trio.CancelScope(shield=True):
            await reset_quietly(stream)
        raise
    stream.set_protocol(chosen)
    return stream


async def reset_quietly(stream: INetStream) -> None:
    with contextlib.suppress(Exception):
        await stream.reset()


def buffered_bytes(conn: INetConn) -> int:
    """Received stream data on one connection that nobody has read yet."""
    return getattr(conn.muxed_conn, "buffered", 0)


async def close_quietly(conn: INetConn) -> None:
    with contextlib.suppress(Exception):
        await conn.close()


def peer_of(stream: INetStream) -> ID:
    return stream.muxed_conn.peer_id


class _ObservingCommunicator(IMultiselectCommunicator):
    """Sees every multistream-select answer, so refusals ("na") can be counted."""

    def __init__(self, inner: IMultiselectCommunicator, on_refused: Callable[[], None]) -> None:
        self._inner = inner
        self._on_refused = on_refused

    async def write(self, msg_str: str) -> None:
        if msg_str == PROTOCOL_NOT_FOUND_MSG:
            self._on_refused()
        await self._inner.write(msg_str)

    async def read(self) -> str:
        return await self._inner.read()


class CountingMultiselect(Multiselect):
    """The host's protocol table, counting proposals of protocols it does not serve."""

    def __init__(
        self,
        handlers: dict[TProtocol | None, StreamHandlerFn | None],
        on_refused: Callable[[], None],
    ) -> None:
        super().__init__(handlers)
        self._on_refused = on_refused

    async def negotiate(
        self, communicator: IMultiselectCommunicator, negotiate_timeout: int = NEGOTIATE_TIMEOUT
    ) -> tuple[TProtocol | None, StreamHandlerFn | None]:
        observed = _ObservingCommunicator(communicator, self._on_refused)
        return await super().negotiate(observed, negotiate_timeout)


def count_unknown_protocols(host: IHost, on_refused: Callable[[], None]) -> None:
    """Swap in a multiselect that reports refused protocol ids (same handler table)."""
    current = host.get_mux()
    host.multiselect = CountingMultiselect(current.handlers, on_refused)  # type: ignore[attr-defined]


def parse_peer_addr(addr: str) -> tuple[ID, multiaddr.Multiaddr]:
    """Split `/ip4/../tcp/../p2p/<id>` into the PeerId and the transport address."""
    maddr = multiaddr.Multiaddr(addr)
    peer = maddr.value_for_protocol("p2p")
    if not peer:
        raise ValueError(f"multiaddr without /p2p/<PeerId>: {addr}")
    transport = multiaddr.Multiaddr(addr.split("/p2p/")[0])
    return ID.from_base58(str(peer)), transport


class Notifee(INotifee):
    """Forwards swarm connection events; must not block the swarm (it awaits us)."""

    def __init__(
        self, on_connected: Callable[[INetConn], None], on_disconnected: Callable[[INetConn], None]
    ) -> None:
        self._on_connected = on_connected
        self._on_disconnected = on_disconnected

    async def connected(self, network: INetwork, conn: INetConn) -> None:
        self._on_connected(conn)

    async def disconnected(self, network: INetwork, conn: INetConn) -> None:
        self._on_disconnected(conn)

    async def opened_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def closed_stream(self, network: INetwork, stream: INetStream) -> None:
        return None

    async def listen(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

    async def listen_close(self, network: INetwork, multiaddr: multiaddr.Multiaddr) -> None:
        return None

"""libp2p TLS (tls_handshake.py): OpenSSL's handshake driven over a real socket pair, then
our record layer, against py-libp2p's own `/tls/1.0.0` (Python's ssl, the system's
OpenSSL) in both roles; peers that must be refused; and which security two hosts pick."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID
from libp2p.security.secure_session import SecureSession
from libp2p.security.tls.transport import TLSTransport
from OpenSSL import SSL

from tests.worker.transport.libp2p.support import HANG_GUARD
from tests.worker.transport.libp2p.test_muxer import connected, ours
from tests.worker.transport.libp2p.test_tls_record import plain_certificate
from worker.transport.libp2p.noise_cipher import NoiseSealer
from worker.transport.libp2p.tls_handshake import TlsHandshakeFailure, TlsSecurity
from worker.transport.libp2p.tls_record import TlsSealer

Secure = Callable[[RawConnection], Awaitable[Any]]


def _raw_pair() -> tuple[RawConnection, RawConnection]:
    a, b = trio.socket.socketpair()
    return (
        RawConnection(TrioTCPStream(trio.SocketStream(a)), True),
        RawConnection(TrioTCPStream(trio.SocketStream(b)), False),
    )


async def _both(dialer: Secure, listener: Secure) -> tuple[Any, Any]:
    """Each side's result, or the exception it raised."""
    client_raw, server_raw = _raw_pair()
    done: dict[str, Any] = {}

    async def run(name: str, secure: Secure, raw: RawConnection) -> None:
        try:
            done[name] = await secure(raw)
        except Exception as exc:
            done[name] = exc
            await raw.close()  # as the upgrader does: the other side is not left waiting

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(run, "client", dialer, client_raw)
            nursery.start_soon(run, "server", listener, server_raw)
    return done["client"], done["server"]


async def _read(session: SecureSession, n: int) -> bytes:
    data = b""
    while len(data) < n:
        data += await session.read(n - len(data))
    return data


@pytest.mark.parametrize("ours_listens", [True, False])
async def test_data_both_ways_with_stock_py_libp2p_tls(ours_listens: bool) -> None:
    our_key, their_key = create_new_key_pair(), create_new_key_pair()
    us, them = TlsSecurity(our_key), TLSTransport(their_key)
    server, client = (us, them) if ours_listens else (them, us)
    server_id = ID.from_pubkey((our_key if ours_listens else their_key).public_key)
    dialed, accepted = await _both(
        lambda raw: client.secure_outbound(raw, server_id), server.secure_inbound
    )
    # each side authenticated the other's libp2p key from its certificate
    assert dialed.get_remote_peer() == server_id
    assert accepted.get_remote_peer() == ID.from_pubkey(
        (their_key if ours_listens else our_key).public_key
    )
    big, small = bytes(range(256)) * 1200, b"answer"
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dialed.write, big)
            assert await _read(accepted, len(big)) == big
        # the listener's first records follow the session tickets OpenSSL's server
        # sent under the same key (ours counts them; stock Python's ssl does it itself)
        await accepted.write(small)
        assert await _read(dialed, len(small)) == small


async def test_a_peer_with_another_key_is_refused() -> None:
    them, stranger = create_new_key_pair(), create_new_key_pair()
    expected = ID.from_pubkey(them.public_key)
    dialed, _ = await _both(
        lambda raw: TlsSecurity(create_new_key_pair()).secure_outbound(raw, expected),
        TlsSecurity(stranger).secure_inbound,
    )
    assert isinstance(dialed, TlsHandshakeFailure)
    assert f"not {expected}'s" in str(dialed)


async def test_a_certificate_without_the_libp2p_extension_is_refused() -> None:
    cert, key = plain_certificate()

    async def plain_tls_client(raw: RawConnection) -> None:
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.use_certificate(cert)
        ctx.use_privatekey(key)
        ctx.set_alpn_protos([b"libp2p"])
        tls = SSL.Connection(ctx, None)
        tls.set_connect_state()
        while True:
            try:
                tls.do_handshake()
            except SSL.WantReadError:
                pass
            except SSL.Error:
                return  # our side's alert
            try:
                out = tls.bio_read(1 << 16)
            except SSL.WantReadError:
                out = b""
            if out:
                await raw.write(out)
            data = await raw.read(1 << 16)
            if not data:
                return
            tls.bio_write(data)

    _, accepted = await _both(plain_tls_client, TlsSecurity(create_new_key_pair()).secure_inbound)
    assert isinstance(accepted, TlsHandshakeFailure)
    assert "binds no libp2p key" in str(accepted)


async def test_bytes_that_are_no_tls_are_refused() -> None:
    async def garbage(raw: RawConnection) -> None:
        await raw.write(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")

    _, accepted = await _both(garbage, TlsSecurity(create_new_key_pair()).secure_inbound)
    assert isinstance(accepted, TlsHandshakeFailure)
    assert "not a TLS record" in str(accepted)


@pytest.mark.parametrize(
    ("dialer", "listener", "sealer"),
    [("tls", "tls", TlsSealer), ("noise", "tls", NoiseSealer), ("tls", "noise", TlsSealer)],
)
async def test_hosts_use_what_the_dialer_proposes_first(
    tmp_path: Path, dialer: str, listener: str, sealer: type
) -> None:
    """Both securities are on offer on each host; the dialer's preference decides."""
    a, b = ours(tmp_path, "a", security=dialer), ours(tmp_path, "b", security=listener)
    async with connected(a, b) as (conn, peer_conn):
        assert isinstance(conn.muxed_conn._sealer, sealer)  # type: ignore[attr-defined]
        assert isinstance(peer_conn.muxed_conn._sealer, sealer)  # type: ignore[attr-defined]

"""Who gets in: the worker handshake between real py-libp2p hosts on 127.0.0.1.

Each refused peer is counted by reason, and its batch requests never reach the router.
Misbehaving peers are bare hosts speaking the protocol by hand (RawClient), except the
duplicate identity, which is a second full transport holding the same authority key.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from libp2p import new_host
from libp2p.abc import INetStream
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair as HostKeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.stream_muxer.mplex.mplex import MPLEX_PROTOCOL_ID, Mplex
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX_PROTOCOL_ID
from libp2p.stream_muxer.yamux.yamux import Yamux

from tests.worker.transport.libp2p.support import (
    HANG_GUARD,
    Plan,
    RawClient,
    cluster,
    counted,
    pending_requests,
    plan,
    raw_client,
    read_or_none,
    try_request,
    wait_connected,
)
from worker.keys import KeyPair
from worker.transport.base import RequestFailed, SendRequest
from worker.transport.libp2p.framing import Kind, encode_frame
from worker.transport.libp2p.handshake import encode_payload, make_handshake, signing_message
from worker.transport.libp2p.host import dialable_addr, listen_addr, parse_peer_addr
from worker.transport.libp2p.transport import HANDSHAKE_PROTOCOL, Libp2pTransport
from worker.transport.testing.contract import expect, round_trip
from worker.wire import messages as wire


async def refused_batch(client: RawClient, p: Plan, server: Libp2pTransport) -> None:
    """A fresh connection without a handshake: its batch request must be refused."""
    before = server.rejections["unauthenticated"]
    await client.connect(p.addrs[0])
    assert await client.try_request(p.addrs[0], b"let me in") is None
    assert server.rejections["unauthenticated"] > before
    assert pending_requests(server) == []


async def attempt(
    tmp: Path, p: Plan, server: Libp2pTransport, payload_for: Callable[[RawClient], bytes]
) -> None:
    """Present a crafted handshake, see it refused, then try a batch request anyway."""
    async with raw_client(tmp) as client:
        conn = await client.connect(p.addrs[0])
        with trio.fail_after(HANG_GUARD):
            assert await client.handshake(conn, payload_for(client)) is None
            await conn.close()
            await refused_batch(client, p, server)


@pytest.mark.parametrize(
    ("reason", "forge"),
    [
        ("unknown_key", lambda c, p: c.signed_handshake(KeyPair.generate(), p.committee)),
        ("own_key", lambda c, p: c.signed_handshake(p.keys[0], p.committee)),
        ("wrong_worker", lambda c, p: c.signed_handshake(p.keys[2], p.committee, worker_id=1)),
        ("malformed", lambda c, p: b"\x00\x01?not a handshake"),
        (
            "bad_signature",  # names authority 2, signed by authority 1
            lambda c, p: encode_payload(
                wire.Handshake(
                    p.keys[2].public_bytes,
                    0,
                    0,
                    p.keys[1].sign(signing_message(c.peer_id.to_bytes(), 0, 0)),
                ),
                c.peer_id.to_bytes(),
            ),
        ),
    ],
)
async def test_crafted_handshakes_are_refused_and_counted(
    tmp_path: Path, reason: str, forge: Callable[[RawClient, Plan], bytes]
) -> None:
    p = plan(3, tmp_path)
    async with cluster(p, running=[0, 1]) as c:
        await wait_connected(c, [0, 1])
        server = c[0]
        await attempt(tmp_path, p, server, lambda client: forge(client, p))
        assert server.rejections[reason] == 1
        assert server.connected_peers() == {p.names[1]}  # the honest peer is untouched
        await round_trip(c, 1, 0, request_id=1)


async def test_replayed_handshake_fails_on_the_peer_id_binding(tmp_path: Path) -> None:
    """Authority 1's genuine handshake, captured and replayed from another host: the signature
    verifies, but it covers worker 1's PeerId, not the one Noise authenticated."""
    p = plan(3, tmp_path)
    async with cluster(p, running=[0, 1]) as c:
        await wait_connected(c, [0, 1])
        captured = c[1]._my_handshake  # exactly what worker 1 sends on its connections
        await attempt(tmp_path, p, c[0], lambda client: captured)
        assert c[0].rejections["peer_id_mismatch"] == 1
        # A handshake signed for some other host's PeerId fails the same way.
        other = create_new_key_pair().public_key
        forged = make_handshake(p.keys[2], ID.from_pubkey(other).to_bytes(), 0, 0)
        await attempt(tmp_path, p, c[0], lambda client: forged)
        assert c[0].rejections["peer_id_mismatch"] == 2
        assert c[0].peer_ids() == {p.names[1]: str(c[1].peer_id)}


async def test_a_second_host_with_the_same_authority_key_is_refused(tmp_path: Path) -> None:
    p = plan(3, tmp_path)
    async with cluster(p, running=[0, 1]) as c:
        await wait_connected(c, [0, 1])
        server, original = c[0], c[1]
        # The same authority key on another host (its own libp2p identity).
        twin = p.build(1, key_dir=tmp_path / "twin", listen_port=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(twin.serve)
            await counted(server, "duplicate_identity")
            twin.send(SendRequest(99, p.names[0], b"from the twin"))
            failed = await expect(twin, RequestFailed)
            assert failed.request_id == 99
            assert twin.connected_peers() == set()
            # The twin's own host opening a batch stream is refused as well.
            assert twin._host is not None
            server_id, server_addr = parse_peer_addr(p.addrs[0])
            with trio.fail_after(HANG_GUARD):
                await twin._host.connect(PeerInfo(server_id, [server_addr]))
                assert await try_request(twin._host, server_id, b"twin") is None
            assert server.rejections["unauthenticated"] >= 1
            nursery.cancel_scope.cancel()
        assert pending_requests(server) == []
        assert server.peer_ids() == {p.names[1]: str(original.peer_id)}
        assert server.connected_peers() == {p.names[1]}
        await round_trip(c, 1, 0, request_id=2)


async def test_the_dialer_verifies_the_listener_too(tmp_path: Path) -> None:
    """A listener answering with someone else's handshake is refused by the dialer."""
    p = plan(3, tmp_path)
    async with cluster(p, running=[0, 1]) as c:
        await wait_connected(c, [0, 1])
        captured = c[0]._my_handshake  # worker 0's genuine handshake
        async with raw_client(tmp_path, "impostor") as impostor:

            async def answer_with_replay(stream: INetStream) -> None:
                await read_or_none(stream)
                await stream.write(encode_frame(Kind.HANDSHAKE, 0, captured))
                await read_or_none(stream)

            impostor.host.set_stream_handler(HANDSHAKE_PROTOCOL, answer_with_replay)
            dialer = c[1]
            assert isinstance(dialer, Libp2pTransport)
            dialer.add_peer_addr(p.names[2], dialable_addr(impostor.host))
            await counted(dialer, "peer_id_mismatch")
            assert dialer.peer_ids() == {p.names[0]: str(c[0].peer_id)}


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(
            lambda kp: {
                "sec_opt": {TProtocol(PLAINTEXT_PROTOCOL_ID): InsecureTransport(kp)},
                "muxer_opt": {TProtocol(YAMUX_PROTOCOL_ID): Yamux},
            },
            id="plaintext-only",
        ),
        pytest.param(
            lambda kp: {
                "sec_opt": {
                    TProtocol(NOISE_PROTOCOL_ID): NoiseTransport(
                        kp, noise_privkey=create_x25519_key_pair().private_key
                    )
                },
                "muxer_opt": {TProtocol(MPLEX_PROTOCOL_ID): Mplex},
            },
            id="mplex-only",
        ),
    ],
)
async def test_plaintext_or_mplex_clients_cannot_connect(
    tmp_path: Path, options: Callable[[HostKeyPair], dict[str, Any]]
) -> None:
    p = plan(2, tmp_path)
    async with cluster(p) as c:
        await wait_connected(c, [0, 1])
        key_pair = create_new_key_pair()
        client = new_host(key_pair=key_pair, **options(key_pair))
        peer_id, maddr = parse_peer_addr(p.addrs[0])
        async with client.run([listen_addr("127.0.0.1")]):
            with trio.fail_after(HANG_GUARD), pytest.raises(Exception):  # noqa: B017
                await client.connect(PeerInfo(peer_id, [maddr]))
            assert client.get_network().get_connections(peer_id) == []
            await client.close()
        assert c[0].connected_peers() == {p.names[1]}
        await round_trip(c, 1, 0, request_id=3)

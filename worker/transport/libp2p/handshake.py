"""The worker handshake: binds an authority key to the libp2p PeerId of one connection.

The authority signs (tag, signer's PeerId, worker id, epoch). The verifier recomputes
the message with the PeerId that Noise authenticated for the connection, so a
handshake replayed from another connection (another PeerId) is refused: the
signature is valid, but for someone else's host. The frame also carries the PeerId
the signer claims, only to tell a forged signature from a replay in the counters.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from worker.config import Committee
from worker.errors import Refused
from worker.keys import KeyPair, encode_key, verify
from worker.wire import messages as wire

SIGNING_TAG = b"narwhal-worker-handshake-v1"
PEER_ID_LEN = struct.Struct(">H")
MAX_HANDSHAKE_BYTES = 1024


class HandshakeRejected(Refused):
    """A handshake that is refused; `reason` is the counter label."""

    source = "handshake"


@dataclass(frozen=True, slots=True)
class Claim:
    """A decoded handshake: who the peer says it is, and the host it says it signed for."""

    handshake: wire.Handshake
    signed_peer_id: bytes

    @property
    def name(self) -> str:
        return encode_key(self.handshake.authority)


def signing_message(peer_id: bytes, worker_id: int, epoch: int) -> bytes:
    """Canonical bytes: tag | u16 len | PeerId | u64 worker id | u64 epoch."""
    return (
        SIGNING_TAG
        + PEER_ID_LEN.pack(len(peer_id))
        + peer_id
        + struct.pack(">QQ", worker_id, epoch)
    )


def make_handshake(keypair: KeyPair, peer_id: bytes, worker_id: int, epoch: int) -> bytes:
    """The HANDSHAKE frame payload a host sends about itself."""
    signature = keypair.sign(signing_message(peer_id, worker_id, epoch))
    hs = wire.Handshake(keypair.public_bytes, worker_id, epoch, signature)
    return encode_payload(hs, peer_id)


def encode_payload(hs: wire.Handshake, signed_peer_id: bytes) -> bytes:
    return PEER_ID_LEN.pack(len(signed_peer_id)) + signed_peer_id + wire.encode(hs)


def decode_payload(payload: bytes) -> Claim:
    if len(payload) < PEER_ID_LEN.size:
        raise HandshakeRejected("malformed")
    (n,) = PEER_ID_LEN.unpack_from(payload)
    peer_id = payload[PEER_ID_LEN.size : PEER_ID_LEN.size + n]
    if len(peer_id) != n or n == 0:
        raise HandshakeRejected("malformed")
    try:
        msg = wire.decode(payload[PEER_ID_LEN.size + n :], MAX_HANDSHAKE_BYTES)
    except wire.WireError as exc:
        raise HandshakeRejected("malformed") from exc
    if not isinstance(msg, wire.Handshake):
        raise HandshakeRejected("malformed")
    return Claim(msg, peer_id)


class Verifier:
    """Checks a claim against the committee and the connection's authenticated PeerId."""

    def __init__(self, committee: Committee, me: str, worker_id: int) -> None:
        self._committee = committee
        self._me = me
        self._worker_id = worker_id

    def check(self, claim: Claim, authenticated_peer_id: bytes) -> str:
        """The claimant's authority name, or raise `HandshakeRejected` with the reason."""
        hs, name = claim.handshake, claim.name
        if name == self._me:
            raise HandshakeRejected("own_key")
        if name not in self._committee.authorities:
            raise HandshakeRejected("unknown_key")
        message = signing_message(claim.signed_peer_id, hs.worker_id, hs.epoch)
        if not verify(name, message, hs.signature):
            raise HandshakeRejected("bad_signature")
        if claim.signed_peer_id != authenticated_peer_id:
            raise HandshakeRejected("peer_id_mismatch")
        if hs.epoch != self._committee.epoch:
            raise HandshakeRejected("wrong_epoch")
        if hs.worker_id != self._worker_id:
            raise HandshakeRejected("wrong_worker")
        if self._worker_id not in self._committee.authorities[name].workers:
            raise HandshakeRejected("wrong_worker")
        return name

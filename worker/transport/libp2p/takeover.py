"""Taking a connection over from py-libp2p once security and muxer negotiation are done.

py-libp2p runs the Noise XX handshake (or we run TLS's, tls_handshake.py) and
multistream-select; after that its Noise layer would await once per message. When our
muxer is built on the secured connection, nothing in py-libp2p reads or writes it again,
and we take, for Noise:

- the trio socket underneath: SecureSession.conn (NoiseTransportReadWriter)
  .read_writer (msgio) .read_write_closer (RawConnection) .stream (TrioTCPStream, or the
  gate's `_Observed` subclass for inbound connections: it only notes that a byte ever
  arrived, which Noise has long made true) .stream (trio.SocketStream);
- each direction's ChaCha20-Poly1305 key and next nonce from the `noise` library's
  cipher states, which are then spent (nonce set to the reserved maximum): a stray
  py-libp2p write would raise instead of reusing a nonce;
- the plaintext py-libp2p buffered past the negotiation: SecureSession decrypts a whole
  message to hand multistream-select one byte, and a peer may have sent its first Yamux
  frames in the same message. Below Noise nothing reads ahead (msgio reads exactly the
  announced lengths; the TCP stream has no buffer).

For TLS the record layer is ours already (`TlsConnection`): its socket, sealer and
opener (with any partial record) pass on as they are, with the plaintext SecureSession
buffered and the ciphertext read with the handshake's last record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import trio
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.security.noise.io import NoiseTransportReadWriter
from libp2p.security.secure_session import SecureSession

from worker.transport.libp2p.noise_cipher import MAX_NONCE, NoiseOpener, NoiseSealer
from worker.transport.libp2p.tls_handshake import TlsConnection
from worker.transport.libp2p.tls_record import TlsOpener, TlsSealer


class TakeoverError(Exception):
    """The secured connection is not TCP + Noise or TLS as py-libp2p 0.8 builds it."""


@dataclass(frozen=True)
class TakenConnection:
    socket: trio.SocketStream
    sealer: NoiseSealer | TlsSealer
    opener: NoiseOpener | TlsOpener
    #: Plaintext received beyond the muxer negotiation (the start of the Yamux session).
    leftover: bytes


def take_over(secured_conn: Any) -> TakenConnection:
    """Our socket, ciphers and buffered plaintext; py-libp2p's copies are retired."""
    if not isinstance(secured_conn, SecureSession):
        raise TakeoverError(f"not a secure session: {type(secured_conn).__name__}")
    secured = secured_conn.conn
    if isinstance(secured, TlsConnection):
        leftover = secured_conn._drain(None)
        if secured.unopened:
            leftover += b"".join(secured.opener.open(secured.unopened))
            secured.unopened = b""
        return TakenConnection(_socket(secured.raw), secured.sealer, secured.opener, leftover)
    if not isinstance(secured, NoiseTransportReadWriter):
        raise TakeoverError(f"not Noise's transport phase: {type(secured).__name__}")
    noise = secured
    raw = noise.read_writer.read_write_closer
    protocol = noise.noise_state.noise_protocol
    send, receive = protocol.cipher_state_encrypt, protocol.cipher_state_decrypt
    if not send.has_key() or not receive.has_key():
        raise TakeoverError("the Noise handshake has not finished")
    sealer, opener = NoiseSealer(send.k, send.n), NoiseOpener(receive.k, receive.n)
    send.n = receive.n = MAX_NONCE
    leftover = secured_conn._drain(None)
    return TakenConnection(_socket(raw), sealer, opener, leftover)


def _socket(raw: Any) -> trio.SocketStream:
    if not isinstance(raw, RawConnection) or not isinstance(raw.stream, TrioTCPStream):
        raise TakeoverError(f"not a TCP connection: {type(raw).__name__}")
    return raw.stream.stream

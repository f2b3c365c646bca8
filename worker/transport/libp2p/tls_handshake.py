"""libp2p's `/tls/1.0.0` security for py-libp2p: OpenSSL's handshake, our record layer.

The handshake is the libp2p TLS spec's (specs/tls/tls.md): TLS 1.3 only, both sides
present a self-signed certificate carrying the libp2p public key extension (py-libp2p's
`certificate` module makes and checks it), no PKIX verification, ALPN `libp2p` (the
muxer is then negotiated with multistream-select, as after Noise). OpenSSL runs it
through pyOpenSSL on memory BIOs, fed one whole record at a time, so it never holds
anything sent after the handshake. Its key log callback hands over the application
traffic secrets, and from then on the records are ours (tls_record.py): OpenSSL is
never asked to read or write again.

The sequence numbers OpenSSL already used under those keys are known exactly: a client
has sent none when its handshake returns; a server has sealed only the NewSessionTicket
records it wrote in that last step, which are counted.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID
from libp2p.abc import IRawConnection, ISecureConn, ISecureTransport
from libp2p.crypto.keys import KeyPair
from libp2p.custom_types import TProtocol
from libp2p.io.abc import EncryptedMsgReadWriter
from libp2p.peer.id import ID
from libp2p.security.exceptions import HandshakeFailure
from libp2p.security.secure_session import SecureSession
from libp2p.security.tls.certificate import generate_certificate, verify_certificate_chain
from OpenSSL import SSL

from worker.transport.libp2p.tls_record import (
    ALERT,
    APPLICATION_DATA,
    CHANGE_CIPHER_SPEC,
    HANDSHAKE,
    HEADER,
    HEADER_SIZE,
    MAX_CIPHERTEXT,
    SUITES,
    TlsOpener,
    TlsSealer,
)

PROTOCOL_ID = TProtocol("/tls/1.0.0")
ALPN = b"libp2p"
#: AES-GCM first: it is several times faster than ChaCha20-Poly1305 with AES instructions.
CIPHERSUITES = b"TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256"
READ_SIZE = 64 * 1024
#: the outer record types a peer may send before its handshake is done
RECORD_TYPES = (HANDSHAKE, CHANGE_CIPHER_SPEC, ALERT, APPLICATION_DATA)
#: Handshake records carry a few certificates; anything larger is not a libp2p peer.
MAX_HANDSHAKE_BYTES = 256 * 1024


class TlsHandshakeFailure(HandshakeFailure):
    """The TLS handshake failed or the peer's certificate does not bind a libp2p key."""


@dataclass
class _Secrets:
    """What OpenSSL's key log callback reported for one connection."""

    client: bytes | None = None
    server: bytes | None = None

    def note(self, _conn: SSL.Connection, line: bytes) -> None:
        label, _random, secret = line.split(b" ")
        if label == b"CLIENT_TRAFFIC_SECRET_0":
            self.client = bytes.fromhex(secret.decode())
        elif label == b"SERVER_TRAFFIC_SECRET_0":
            self.server = bytes.fromhex(secret.decode())


class TlsConnection(EncryptedMsgReadWriter):
    """A connection after the TLS handshake, on our record layer. py-libp2p reads and
    writes it only for the muxer negotiation; then the muxer takes it over (takeover.py)."""

    def __init__(self, raw: IRawConnection, sealer: TlsSealer, opener: TlsOpener, rest: bytes):
        super().__init__(raw)
        self.raw = raw
        self.sealer = sealer
        self.opener = opener
        #: Ciphertext read with the handshake's last record, not opened yet.
        self.unopened = rest

    async def read_msg(self) -> bytes:
        while True:
            data, self.unopened = self.unopened, b""
            if not data:
                data = await self.raw.read(READ_SIZE)
                if not data:
                    return b""
            pieces = self.opener.open(data)
            if pieces:
                return bytes(pieces[0])
            if self.opener.closed:
                return b""

    async def write_msg(self, msg: bytes) -> None:
        for piece in self.sealer.seal([msg]):
            await self.raw.write(bytes(piece))

    def encrypt(self, data: bytes) -> bytes:
        return bytes(self.sealer.seal([data])[0])

    def decrypt(self, data: bytes) -> bytes:
        return b"".join(self.opener.open(data))

    async def close(self) -> None:
        await self.raw.close()


class TlsSecurity(ISecureTransport):
    """libp2p TLS 1.3 for a host whose identity is `identity` (see the module docstring)."""

    def __init__(self, identity: KeyPair) -> None:
        self._identity = identity
        self.local_peer = ID.from_pubkey(identity.public_key)
        cert_pem, key_pem = generate_certificate(identity.private_key, _template())
        self._cert = x509.load_pem_x509_certificate(cert_pem.encode())
        self._key = serialization.load_pem_private_key(key_pem.encode(), password=None)

    def get_protocol_id(self) -> TProtocol:
        return PROTOCOL_ID

    async def secure_inbound(self, conn: IRawConnection) -> ISecureConn:
        return await self._secure(conn, server=True, expected=None)

    async def secure_outbound(self, conn: IRawConnection, peer_id: ID) -> ISecureConn:
        return await self._secure(conn, server=False, expected=peer_id)

    def _context(self, secrets: _Secrets, server: bool) -> SSL.Context:
        ctx = SSL.Context(SSL.TLS_METHOD)
        ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
        ctx.set_tls13_ciphersuites(CIPHERSUITES)
        ctx.set_options(SSL.OP_CIPHER_SERVER_PREFERENCE)
        ctx.use_certificate(self._cert)
        ctx.use_privatekey(self._key)  # type: ignore[arg-type]
        # the peer's certificate is required, its binding checked after the handshake
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, _accept_any)
        ctx.set_keylog_callback(secrets.note)
        if server:
            ctx.set_alpn_select_callback(_select_libp2p)
        else:
            ctx.set_alpn_protos([ALPN])
        return ctx

    async def _secure(
        self, conn: IRawConnection, *, server: bool, expected: ID | None
    ) -> SecureSession:
        secrets = _Secrets()
        tls = SSL.Connection(self._context(secrets, server), None)
        if server:
            tls.set_accept_state()
        else:
            tls.set_connect_state()
        rest, sequence = await _run_handshake(tls, conn, server)
        peer_key = _peer_key(tls)
        peer = ID.from_pubkey(peer_key)
        if expected is not None and peer != expected:
            raise TlsHandshakeFailure(f"the certificate is {peer}'s, not {expected}'s")
        suite = SUITES.get(tls.get_cipher_name() or "")
        if suite is None or secrets.client is None or secrets.server is None:
            raise TlsHandshakeFailure(f"no traffic secrets for {tls.get_cipher_name()}")
        ours, theirs = secrets.server, secrets.client
        if not server:
            ours, theirs = theirs, ours
        sealer, opener = TlsSealer(suite, ours, sequence), TlsOpener(suite, theirs)
        return SecureSession(
            local_peer=self.local_peer,
            local_private_key=self._identity.private_key,
            remote_peer=peer,
            remote_permanent_pubkey=peer_key,
            is_initiator=not server,
            conn=TlsConnection(conn, sealer, opener, rest),
        )


async def _run_handshake(
    tls: SSL.Connection, conn: IRawConnection, server: bool
) -> tuple[bytes, int]:
    """Drive OpenSSL's handshake over `conn`, one whole record at a time: the ciphertext
    read beyond it, and the first sequence number left for our records."""
    buffered, total = b"", 0
    while True:
        try:
            tls.do_handshake()
            done = True
        except SSL.WantReadError:
            done = False
        except SSL.Error as exc:
            await _send_quietly(conn, _drain(tls))  # OpenSSL's alert, if it made one
            raise TlsHandshakeFailure(f"TLS handshake failed: {exc}") from exc
        out = _drain(tls)
        if out:
            await conn.write(out)
        if done:
            return buffered, _count_records(out) if server else 0
        while True:
            if len(buffered) >= HEADER_SIZE:
                kind, _version, size = HEADER.unpack_from(buffered)
                if size > MAX_CIPHERTEXT or kind not in RECORD_TYPES:
                    raise TlsHandshakeFailure(f"not a TLS record (type {kind}, {size} bytes)")
                if len(buffered) >= HEADER_SIZE + size:
                    break
            data = await conn.read(READ_SIZE)
            if not data:
                raise TlsHandshakeFailure("the peer closed the connection during the handshake")
            total += len(data)
            if total > MAX_HANDSHAKE_BYTES:
                raise TlsHandshakeFailure("handshake larger than any libp2p peer's")
            buffered += data
        end = HEADER_SIZE + size
        tls.bio_write(buffered[:end])
        buffered = buffered[end:]


def _drain(tls: SSL.Connection) -> bytes:
    out = b""
    while True:
        try:
            out += tls.bio_read(READ_SIZE)
        except SSL.WantReadError:
            return out


async def _send_quietly(conn: IRawConnection, data: bytes) -> None:
    if data:  # the handshake failed already; the alert is a courtesy
        with contextlib.suppress(Exception):
            await conn.write(data)


def _count_records(data: bytes) -> int:
    count, pos = 0, 0
    while pos + HEADER_SIZE <= len(data):
        pos += HEADER_SIZE + HEADER.unpack_from(data, pos)[2]
        count += 1
    return count


def _peer_key(tls: SSL.Connection):  # type: ignore[no-untyped-def]
    cert = tls.get_peer_certificate(as_cryptography=True)
    if cert is None:
        raise TlsHandshakeFailure("the peer presented no certificate")
    try:
        return verify_certificate_chain([cert])
    except Exception as exc:  # py-libp2p raises several kinds for a bad binding
        raise TlsHandshakeFailure(f"the peer's certificate binds no libp2p key: {exc}") from exc


def _template() -> x509.CertificateBuilder:
    """py-libp2p's certificate template without its two extensions of its own, so the
    libp2p extension is the certificate's only (and first) one: js-libp2p's
    @libp2p/tls 3.1 reads `extensions[0]` alone and refuses py-libp2p's stock layout
    (docs/interop.md, Findings). The spec allows other extensions; go and js add none."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "libp2p")])
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)  # clock skew
    return (
        x509.CertificateBuilder()
        .serial_number(int.from_bytes(os.urandom(8), "big"))
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=365 * 100))  # as py-libp2p's
        .subject_name(name)
        .issuer_name(name)
    )


def _accept_any(*_verify_args: object) -> bool:
    """OpenSSL's PKIX check is skipped (the spec's certificates are self-signed)."""
    return True


def _select_libp2p(_conn: SSL.Connection, offered: list[bytes]) -> bytes:
    return ALPN if ALPN in offered else SSL.NO_OVERLAPPING_PROTOCOLS  # type: ignore[return-value]

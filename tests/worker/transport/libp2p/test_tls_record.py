"""The TLS 1.3 record layer (tls_record.py) without sockets, checked against OpenSSL's own
record layer (pyOpenSSL on memory BIOs) after a real handshake between two of its
connections, for each cipher suite libp2p peers may pick."""

from __future__ import annotations

import datetime
import itertools
import random
import struct
from dataclasses import dataclass, field

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

from worker.transport.libp2p.muxer import batches
from worker.transport.libp2p.tls_record import (
    HEADER,
    HEADER_SIZE,
    MAX_CIPHERTEXT,
    MAX_PLAINTEXT,
    SUITES,
    TAG_SIZE,
    TlsOpener,
    TlsRecordError,
    TlsSealer,
)

#: the last one grows the sealer's cached slices (after 600,000 bytes' worth)
SIZES = [0, 1, 1_000, MAX_PLAINTEXT, MAX_PLAINTEXT + 1, 600_000, 1_100_000]


def plain_certificate() -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed certificate with no libp2p key in it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .sign(key, hashes.SHA256())
    )
    return cert, key


@dataclass
class _Side:
    conn: SSL.Connection
    secrets: dict[bytes, bytes] = field(default_factory=dict)


def _side(server: bool, suite: str) -> _Side:
    ctx = SSL.Context(SSL.TLS_METHOD)
    ctx.set_min_proto_version(SSL.TLS1_3_VERSION)
    ctx.set_tls13_ciphersuites(suite.encode())
    if server:
        cert, key = plain_certificate()
        ctx.use_certificate(cert)
        ctx.use_privatekey(key)
    secrets: dict[bytes, bytes] = {}
    ctx.set_keylog_callback(lambda _c, line: secrets.update([line.split(b" ")[::2]]))
    side = _Side(SSL.Connection(ctx, None), secrets)
    side.conn.set_accept_state() if server else side.conn.set_connect_state()
    return side


def _pump(src: SSL.Connection, dst: SSL.Connection | None) -> bytes:
    out = b""
    while True:
        try:
            out += src.bio_read(1 << 20)
        except SSL.WantReadError:
            break
    if out and dst is not None:
        dst.bio_write(out)
    return out


def _step(side: _Side) -> bool:
    try:
        side.conn.do_handshake()
    except SSL.WantReadError:
        return False
    return True


def _handshake(suite: str) -> tuple[_Side, _Side, bytes]:
    """Both sides after the handshake, and what the server wrote in its last step (its
    NewSessionTicket records, under its application key), not given to the client."""
    client, server = _side(False, suite), _side(True, suite)
    _step(client)
    _pump(client.conn, server.conn)
    _step(server)
    _pump(server.conn, client.conn)
    assert _step(client)
    _pump(client.conn, server.conn)
    assert _step(server)
    assert client.conn.get_cipher_name() == suite
    return client, server, _pump(server.conn, None)


def _ours(side: _Side, server: bool, suite: str) -> tuple[TlsSealer, TlsOpener]:
    theirs_label, ours_label = b"CLIENT_TRAFFIC_SECRET_0", b"SERVER_TRAFFIC_SECRET_0"
    if not server:
        theirs_label, ours_label = ours_label, theirs_label
    cipher = SUITES[suite]
    ours = bytes.fromhex(side.secrets[ours_label].decode())
    theirs = bytes.fromhex(side.secrets[theirs_label].decode())
    return TlsSealer(cipher, ours), TlsOpener(cipher, theirs)


def _read_all(conn: SSL.Connection) -> bytes:
    out = b""
    while True:
        try:
            out += conn.recv(1 << 20)
        except (SSL.WantReadError, SSL.ZeroReturnError):
            return out


def _split(wire: bytes, rng: random.Random) -> list[bytes]:
    """`wire` cut at random places, some inside record headers."""
    cuts = sorted(rng.sample(range(1, len(wire)), min(40, len(wire) - 1))) if len(wire) > 1 else []
    return [wire[a:b] for a, b in zip([0, *cuts], [*cuts, len(wire)], strict=True)]


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_openssl_reads_what_we_seal(suite: str) -> None:
    client, server, _tickets = _handshake(suite)
    sealer, _ = _ours(client, server=False, suite=suite)
    rng = random.Random(1)
    for size in SIZES:
        data = rng.randbytes(size)
        for group in batches([data[:7], data[7:]], 128 * 1024, sealer.max_plaintext):
            for piece in sealer.seal(group):
                server.conn.bio_write(bytes(piece))
        assert _read_all(server.conn) == data


@pytest.mark.parametrize("suite", sorted(SUITES))
def test_we_read_what_openssl_seals(suite: str) -> None:
    client, server, tickets = _handshake(suite)
    # OpenSSL's server wrote its NewSessionTicket records already: our client-side
    # opener must take and skip them (post-handshake handshake messages)
    assert tickets
    _, opener = _ours(client, server=False, suite=suite)
    rng = random.Random(2)
    assert opener.open(tickets) == []
    for size in SIZES:
        data = rng.randbytes(size)
        if data:
            server.conn.sendall(data)
        wire = _pump(server.conn, None)
        got = b"".join(b"".join(opener.open(chunk)) for chunk in _split(wire, rng))
        assert got == data
        assert opener.pending == 0


def _pair(suite: str = "TLS_AES_128_GCM_SHA256") -> tuple[TlsSealer, TlsOpener]:
    secret = bytes(range(SUITES[suite].hash.digest_size))
    return TlsSealer(SUITES[suite], secret), TlsOpener(SUITES[suite], secret)


def _inner_record(sealer: TlsSealer, content: bytes, kind: int, padding: int = 0) -> bytes:
    """A record of any inner content type (our sealer only makes application data)."""
    header = HEADER.pack(23, 0x0303, len(content) + 1 + padding + TAG_SIZE)
    plaintext = content + bytes([kind]) + bytes(padding)
    record = header + sealer.aead.encrypt(sealer.nonce(sealer.sequence), plaintext, header)
    sealer.sequence += 1
    return record


def test_a_forged_record_is_refused() -> None:
    sealer, opener = _pair()
    wire = bytearray(sealer.seal([b"x" * 5_000])[0])
    wire[HEADER_SIZE + 10] ^= 1
    with pytest.raises(TlsRecordError) as info:
        opener.open(bytes(wire))
    assert info.value.reason == "tls_invalid_record"


@pytest.mark.parametrize(
    "header",
    [
        HEADER.pack(22, 0x0303, 100),  # a plaintext handshake record after the handshake
        HEADER.pack(23, 0x0303, MAX_CIPHERTEXT + 1),  # longer than TLS allows
        HEADER.pack(23, 0x0303, TAG_SIZE),  # no room for the inner content type
    ],
)
def test_a_bad_header_is_refused_before_its_body(header: bytes) -> None:
    _, opener = _pair()
    with pytest.raises(TlsRecordError):
        opener.open(header)  # the body never arrives: the header alone is refused


def test_padding_and_post_handshake_messages() -> None:
    sealer, opener = _pair()
    ticket = bytes([4]) + (5).to_bytes(3, "big") + b"ticke"
    wire = (
        _inner_record(sealer, b"first", 23, padding=7)
        + _inner_record(sealer, ticket, 22)
        + _inner_record(sealer, b"second", 23)
    )
    assert b"".join(opener.open(wire)) == b"firstsecond"


def test_key_update_rekeys_the_peer_direction() -> None:
    sealer, opener = _pair()
    before = _inner_record(sealer, b"old key", 23)
    update = _inner_record(sealer, bytes([24, 0, 0, 1, 0]), 22)  # update_not_requested
    from worker.transport.libp2p.tls_record import expand_label

    sealer.rekey(expand_label(sealer.suite, sealer.secret, b"traffic upd", len(sealer.secret)))
    after = sealer.seal([b"new key"])[0]
    assert b"".join(opener.open(before + update + bytes(after))) == b"old keynew key"


def test_a_requested_key_update_is_refused() -> None:
    sealer, opener = _pair()
    with pytest.raises(TlsRecordError) as info:
        opener.open(_inner_record(sealer, bytes([24, 0, 0, 1, 1]), 22))
    assert info.value.reason == "tls_key_update_requested"


def test_close_notify_ends_the_stream() -> None:
    sealer, opener = _pair()
    last = bytes(sealer.seal([b"last"])[0])
    wire = last + _inner_record(sealer, bytes([1, 0]), 21) + bytes(sealer.seal([b"x"])[0])
    assert opener.open(wire) == [b"last"]
    assert opener.closed
    assert opener.open(bytes(sealer.seal([b"more"])[0])) == []


def test_a_fatal_alert_is_refused() -> None:
    sealer, opener = _pair()
    with pytest.raises(TlsRecordError) as info:
        opener.open(_inner_record(sealer, bytes([2, 40]), 21))  # handshake_failure
    assert info.value.reason == "tls_alert"


def test_sealed_records_are_full_and_numbered() -> None:
    sealer, _ = _pair()
    wire = bytes(sealer.seal([b"a" * 20_000, b"b" * 20_000])[0])
    sizes, pos = [], 0
    while pos < len(wire):
        size = struct.unpack_from(">H", wire, pos + 3)[0]
        sizes.append(size - 1 - TAG_SIZE)
        pos += HEADER_SIZE + size
    assert sizes == [MAX_PLAINTEXT, MAX_PLAINTEXT, 40_000 - 2 * MAX_PLAINTEXT]
    assert sealer.sequence == 3


def test_what_is_opened_is_one_read_only_piece() -> None:
    sealer, opener = _pair()
    (piece,) = opener.open(bytes(sealer.seal([b"a" * 40_000])[0]))
    assert isinstance(piece, memoryview) and piece.readonly and piece == b"a" * 40_000


def test_how_a_write_is_cut_into_segments_does_not_change_the_wire() -> None:
    data = random.Random(3).randbytes(3 * MAX_PLAINTEXT + 5)
    whole, _ = _pair()
    expected = bytes(whole.seal([data])[0])
    for cuts in ([7], [0, 0, MAX_PLAINTEXT], [MAX_PLAINTEXT - 1, MAX_PLAINTEXT + 1], [1, 2, 3]):
        bounds = [0, *cuts, len(data)]
        segments: list[bytes | bytearray | memoryview] = []
        for i, (a, b) in enumerate(itertools.pairwise(bounds)):
            piece = data[a:b]
            segments.append((bytes, bytearray, memoryview)[i % 3](piece))
        sealer, _ = _pair()
        assert bytes(sealer.seal(segments)[0]) == expected
        assert sealer.sequence == whole.sequence == 4
    empty, opener = _pair()
    assert opener.open(bytes(empty.seal([b"", b""])[0])) == []  # one record, no content
    assert empty.sequence == 1


@pytest.mark.parametrize("odd_one", [0, 1, 2, 4, 5])
@pytest.mark.parametrize("kind", [23, 22])
def test_a_full_size_record_that_is_not_plain_data_among_full_ones(odd_one: int, kind: int) -> None:
    """Among full-size records back to back, one padded to full size, or a handshake
    message of that size, is read as what it is, wherever it sits and however the
    bytes arrive."""
    sealer, _ = _pair()
    rng = random.Random(odd_one * 100 + kind)
    contents = [rng.randbytes(MAX_PLAINTEXT) for _ in range(6)]
    wire, expected = b"", b""
    for i, content in enumerate(contents):
        if i != odd_one:
            wire += _inner_record(sealer, content, 23)
            expected += content
        elif kind == 23:  # padded to full size: less content, same record size
            wire += _inner_record(sealer, content[:-100], 23, padding=100)
            expected += content[:-100]
        else:  # a NewSessionTicket of full size (skipped)
            ticket = bytes([4]) + (MAX_PLAINTEXT - 4).to_bytes(3, "big")
            wire += _inner_record(sealer, ticket + bytes(MAX_PLAINTEXT - 4), 22)
    assert len(wire) == 6 * (HEADER_SIZE + MAX_PLAINTEXT + 1 + TAG_SIZE)
    for chunks in ([wire], _split(wire, rng)):
        _, opener = _pair()
        assert b"".join(b"".join(opener.open(chunk)) for chunk in chunks) == expected
        assert opener.sequence == 6 and opener.pending == 0


@pytest.mark.parametrize("forged", [0, 1, 3])
def test_a_forged_record_among_full_ones_is_refused(forged: int) -> None:
    sealer, opener = _pair()
    wire = bytearray(sealer.seal([bytes(4 * MAX_PLAINTEXT)])[0])
    wire[forged * (HEADER_SIZE + MAX_PLAINTEXT + 1 + TAG_SIZE) + HEADER_SIZE + 99] ^= 1
    with pytest.raises(TlsRecordError) as info:
        opener.open(bytes(wire))
    assert info.value.reason == "tls_invalid_record"

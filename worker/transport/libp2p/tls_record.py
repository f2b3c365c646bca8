"""The TLS 1.3 record layer of libp2p's `/tls/1.0.0` after the handshake, sans-IO.

OpenSSL (through pyOpenSSL, tls_handshake.py) runs the handshake; the application
traffic secrets it reports then key this layer (RFC 8446 §5, §7.3):

- a record is `0x17 | 0x0303 | u16 length | AEAD(content | inner type | zeros)`, at most
  2^14 content bytes, with the 5-byte header as associated data and the nonce the
  traffic IV XOR the record's 64-bit sequence number;
- `TlsSealer.seal` lays a whole write out in one buffer (headers, content, inner type
  byte, room for the tags) with a single join of the plaintext's pieces (no
  zero-filled buffer), and encrypts each record in place: one piece to send per call;
- `TlsOpener.open` decrypts every complete record of what the socket gave into one
  fresh buffer, the contents back to back, and hands it up as a read-only view that
  nothing changes later (Yamux keeps slices of it, no copy), keeping at most one
  partial record. Handshake messages after the handshake (NewSessionTicket, KeyUpdate)
  and alerts are handled here; a `close_notify` ends the stream (`closed`).

Why our own record layer: AES-GCM runs 4-5x faster than ChaCha20-Poly1305 on CPUs with
AES instructions, but OpenSSL's record layer behind Python's `ssl` or pyOpenSSL costs
a copy in and out of its memory BIO per record (docs/libp2p-protocol.md, Measurements).
"""

from __future__ import annotations

import functools
import operator
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand

from worker.allocator import uninitialized
from worker.errors import Refused

TAG_SIZE = 16
HEADER_SIZE = 5
MAX_PLAINTEXT = 1 << 14
#: RFC 8446 §5.2: a ciphertext may be at most 2^14 + 256 bytes.
MAX_CIPHERTEXT = MAX_PLAINTEXT + 256
APPLICATION_DATA = 23
HANDSHAKE = 22
ALERT = 21
CHANGE_CIPHER_SPEC = 20
NEW_SESSION_TICKET = 4
KEY_UPDATE = 24
CLOSE_NOTIFY = 0
HEADER = struct.Struct(">BHH")
#: What follows a record's content before the AEAD: its inner type, room for the tag.
TRAILER = bytes([APPLICATION_DATA]) + bytes(TAG_SIZE)
#: The sequence number never wraps (§5.3); a connection never gets near it.
MAX_SEQUENCE = 2**64 - 1

Buffer = bytes | bytearray | memoryview


class TlsRecordError(Refused):
    """A record that does not authenticate or breaks the protocol: the connection is lost."""

    source = "transport"


@dataclass(frozen=True)
class CipherSuite:
    name: str
    aead: Callable[[bytes], AESGCM | ChaCha20Poly1305]
    key_size: int
    hash: hashes.HashAlgorithm


SUITES = {
    s.name: s
    for s in (
        CipherSuite("TLS_AES_128_GCM_SHA256", AESGCM, 16, hashes.SHA256()),
        CipherSuite("TLS_AES_256_GCM_SHA384", AESGCM, 32, hashes.SHA384()),
        CipherSuite("TLS_CHACHA20_POLY1305_SHA256", ChaCha20Poly1305, 32, hashes.SHA256()),
    )
}


def expand_label(suite: CipherSuite, secret: bytes, label: bytes, length: int) -> bytes:
    """HKDF-Expand-Label with an empty context (RFC 8446 §7.1)."""
    full = b"tls13 " + label
    info = struct.pack(">HB", length, len(full)) + full + b"\x00"
    return HKDFExpand(suite.hash, length, info).derive(secret)


class _Direction:
    """One direction's AEAD, IV and sequence number, from its traffic secret."""

    def __init__(self, suite: CipherSuite, secret: bytes, sequence: int = 0) -> None:
        self.suite = suite
        self.rekey(secret)
        self.sequence = sequence

    def rekey(self, secret: bytes) -> None:
        self.secret = secret
        self.aead = self.suite.aead(expand_label(self.suite, secret, b"key", self.suite.key_size))
        self.iv = int.from_bytes(expand_label(self.suite, secret, b"iv", 12), "big")
        self.sequence = 0

    def nonce(self, sequence: int) -> bytes:
        return (self.iv ^ sequence).to_bytes(12, "big")


class TlsSealer(_Direction):
    """Our direction: plaintext in, whole TLS records out."""

    max_plaintext = MAX_PLAINTEXT

    def seal(self, segments: list[Buffer]) -> list[bytearray]:
        """The concatenation of `segments` as consecutive full records, in one buffer."""
        contents = _contents(segments)
        count = len(contents)
        sequence = self.sequence
        if sequence + count >= MAX_SEQUENCE:
            raise OverflowError("TLS sequence numbers exhausted")
        self.sequence = sequence + count
        # the layout, joined in one pass (one copy of the plaintext, no zero fill):
        # header, content, then the inner type byte and room for the tag
        last = len(contents[-1])
        headers = [FULL_HEADER] * (count - 1)
        headers.append(HEADER.pack(APPLICATION_DATA, 0x0303, last + 1 + TAG_SIZE))
        parts = [TRAILER] * (3 * count)
        parts[0::3] = headers
        parts[1::3] = contents
        out = bytearray().join(parts)
        # each record's AEAD in place (output and input start at the same byte), driven
        # from C (map): no Python bytecode per record
        view = memoryview(out)
        plain, sealed = _record_slices(count - 1)
        body = HEADER_SIZE + (count - 1) * FULL_RECORD
        plain.append(slice(body, body + last + 1))
        sealed.append(slice(body, body + last + 1 + TAG_SIZE))
        nonces = map(_NONCE, map(self.iv.__xor__, range(sequence, sequence + count)))
        at = view.__getitem__
        _drain(map(self.aead.encrypt_into, nonces, map(at, plain), headers, map(at, sealed)))
        return [out]


#: one full record on the wire: header, content, inner type byte, tag
FULL_RECORD = HEADER_SIZE + MAX_PLAINTEXT + 1 + TAG_SIZE
FULL_HEADER = HEADER.pack(APPLICATION_DATA, 0x0303, MAX_PLAINTEXT + 1 + TAG_SIZE)
_NONCE = operator.methodcaller("to_bytes", 12, "big")
#: consume an iterator in C
_drain = functools.partial(deque, maxlen=0)


#: the slices of the first full records of a sealed buffer (plaintext, then sealed), and
#: of the first records' contents of one payload; grown to the longest write seen
_PLAIN: list[slice] = []
_SEALED: list[slice] = []
_CONTENT: list[slice] = []


def _record_slices(count: int) -> tuple[list[slice], list[slice]]:
    """The plaintext and sealed slices of the first `count` full records (new lists)."""
    for i in range(len(_PLAIN), count):
        start = HEADER_SIZE + i * FULL_RECORD
        _PLAIN.append(slice(start, start + MAX_PLAINTEXT + 1))
        _SEALED.append(slice(start, start + MAX_PLAINTEXT + 1 + TAG_SIZE))
    return _PLAIN[:count], _SEALED[:count]


def _content_slices(count: int) -> list[slice]:
    """The slices of the first `count` records' contents of one payload (a new list)."""
    for i in range(len(_CONTENT), count):
        _CONTENT.append(slice(i * MAX_PLAINTEXT, (i + 1) * MAX_PLAINTEXT))
    return _CONTENT[:count]


def _contents(segments: list[Buffer]) -> list[Buffer]:
    """Each record's content, in order: MAX_PLAINTEXT bytes each but the last (views of
    `segments`, no copy, but for a record that spans segments: those few are joined);
    one empty record for no bytes at all."""
    if len(segments) == 1:  # the usual case: a part of one large payload
        whole = memoryview(segments[0])
        if len(whole) <= MAX_PLAINTEXT:
            return [whole]
        return list(map(whole.__getitem__, _content_slices(-(-len(whole) // MAX_PLAINTEXT))))
    out: list[Buffer] = []
    carry: list[Buffer] = []  # the pieces of a record not full yet
    room = MAX_PLAINTEXT
    for segment in segments:
        view = memoryview(segment)
        length, start = len(view), 0
        if carry:
            start = min(room, length)
            carry.append(view[:start])
            room -= start
            if room:
                continue
            out.append(b"".join(carry))
            carry, room = [], MAX_PLAINTEXT
        full = start + (length - start) // MAX_PLAINTEXT * MAX_PLAINTEXT
        out.extend([view[i : i + MAX_PLAINTEXT] for i in range(start, full, MAX_PLAINTEXT)])
        if full < length:
            carry = [view[full:]]
            room = MAX_PLAINTEXT - (length - full)
    if carry:
        out.append(carry[0] if len(carry) == 1 else b"".join(carry))
    return out or [b""]


class TlsOpener(_Direction):
    """The peer's direction: socket bytes in, the application data of whole records out."""

    def __init__(self, suite: CipherSuite, secret: bytes, sequence: int = 0) -> None:
        super().__init__(suite, secret, sequence)
        self._partial = b""  # the start of a record whose end has not arrived
        self._handshake = b""  # a post-handshake message split across records
        #: The peer sent close_notify: nothing it sends later counts.
        self.closed = False

    @property
    def pending(self) -> int:
        """Bytes held of a record not yet complete."""
        return len(self._partial)

    def open(self, data: Buffer) -> list[Buffer]:
        """The application data of the records `data` completes: at most one piece, a
        read-only view of a buffer this opener never touches again."""
        view = memoryview(data)
        records: list[tuple[memoryview, int, int]] = []  # (buffer, record start, size)
        pos = self._complete_partial(view, records) if self._partial else 0
        end, unpack = len(view), HEADER.unpack_from
        while end - pos >= HEADER_SIZE:
            kind, _version, size = unpack(view, pos)
            if kind != APPLICATION_DATA or size > MAX_CIPHERTEXT or size <= TAG_SIZE:
                _refuse_header(kind, size)
            stop = pos + HEADER_SIZE + size
            if stop > end:
                break
            records.append((view, pos, size))
            pos = stop
        if pos < end:
            self._partial = bytes(view[pos:])
        if not records or self.closed:
            return []
        # not zeroed: the decryptions write every byte kept (everything past `filled` is cut)
        out = uninitialized(sum(size for _, _, size in records) - TAG_SIZE * len(records))
        target = memoryview(out)
        filled = 0
        decrypt_into, iv = self.aead.decrypt_into, self.iv
        for source, start, size in records:
            body = start + HEADER_SIZE
            length = size - TAG_SIZE
            place = target[filled : filled + length]
            nonce = (iv ^ self.sequence).to_bytes(12, "big")
            try:
                decrypt_into(nonce, source[body : body + size], source[start:body], place)
            except InvalidTag:
                raise TlsRecordError("tls_invalid_record", "authentication failed") from None
            self.sequence += 1
            if out[filled + length - 1] == APPLICATION_DATA:  # the usual case: no padding
                filled += length - 1  # the next record's content overwrites the type byte
                continue
            content_end = len(bytes(place).rstrip(b"\x00"))
            if content_end == 0:
                raise TlsRecordError("tls_invalid_record", "no content type")
            kind = out[filled + content_end - 1]
            content = bytes(out[filled : filled + content_end - 1])
            if kind == APPLICATION_DATA:  # padded: its content is in place already
                filled += content_end - 1
            elif kind == HANDSHAKE:
                self._post_handshake(content)  # a KeyUpdate rekeys this direction
                decrypt_into, iv = self.aead.decrypt_into, self.iv
            elif kind == ALERT:
                self._alert(content)
                break
            else:
                raise TlsRecordError("tls_invalid_record", f"inner content type {kind}")
        del target, place
        if not filled:
            return []
        del out[filled:]
        # read-only, and nothing here touches `out` again: the layers above may keep
        # views of it (no copy)
        return [memoryview(out).toreadonly()]

    def _complete_partial(
        self, view: memoryview, records: list[tuple[memoryview, int, int]]
    ) -> int:
        """Finish the held record with the start of `view`; returns how much it took
        (all of `view` if the record is still incomplete)."""
        held = self._partial
        pos = max(0, HEADER_SIZE - len(held))
        held += bytes(view[:pos])
        if len(held) < HEADER_SIZE:
            self._partial = held
            return len(view)
        total = HEADER_SIZE + _check_header(memoryview(held), 0)
        need = total - len(held)
        held += bytes(view[pos : pos + need])
        if len(held) < total:
            self._partial = held
            return len(view)
        self._partial = b""
        records.append((memoryview(held), 0, total - HEADER_SIZE))
        return pos + need

    def _alert(self, content: bytes) -> None:
        if len(content) != 2:
            raise TlsRecordError("tls_invalid_record", "malformed alert")
        if content[1] != CLOSE_NOTIFY:
            raise TlsRecordError("tls_alert", f"the peer sent alert {content[1]}")
        self.closed = True

    def _post_handshake(self, content: bytes) -> None:
        """NewSessionTicket is ignored (we never resume); KeyUpdate rekeys this direction."""
        data = self._handshake + content
        while len(data) >= 4:
            kind, size = data[0], int.from_bytes(data[1:4], "big")
            if len(data) < 4 + size:
                break
            body, data = data[4 : 4 + size], data[4 + size :]
            if kind == NEW_SESSION_TICKET:
                continue
            if kind == KEY_UPDATE and body == b"\x00":  # update_not_requested
                self.rekey(expand_label(self.suite, self.secret, b"traffic upd", len(self.secret)))
                continue
            if kind == KEY_UPDATE:
                raise TlsRecordError("tls_key_update_requested", "a reply key update is not sent")
            raise TlsRecordError("tls_invalid_record", f"handshake message {kind} after the end")
        if len(data) > 1 << 16:
            raise TlsRecordError("tls_invalid_record", "oversized handshake message")
        self._handshake = data


def _check_header(view: memoryview, pos: int) -> int:
    """The ciphertext size the record header at `pos` announces, if it is one we take."""
    kind, _version, size = HEADER.unpack_from(view, pos)
    if kind != APPLICATION_DATA or size > MAX_CIPHERTEXT or size <= TAG_SIZE:
        _refuse_header(kind, size)
    return size


def _refuse_header(kind: int, size: int) -> None:
    if kind != APPLICATION_DATA:
        raise TlsRecordError("tls_invalid_record", f"outer content type {kind}")
    raise TlsRecordError("tls_invalid_record", f"ciphertext of {size} bytes")

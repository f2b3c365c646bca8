"""The Noise transport phase of libp2p's `/noise` (after the XX handshake), sans-IO.

Each direction has a ChaCha20-Poly1305 key and a message counter from the handshake.
On the wire a message is `u16 big-endian length | ciphertext`, the ciphertext being the
AEAD of at most 65,519 plaintext bytes (65,535 minus the 16-byte tag, go-libp2p's
MaxPlaintextLength) under nonce `4 zero bytes | u64 little-endian counter` with empty
associated data; the counter counts messages. Message boundaries mean nothing to the
layer above (Yamux frames may straddle them), so:

- `NoiseSealer.seal` turns a whole write into consecutive messages (one AEAD object,
  one pass, no copy of the plaintext; the caller sends them with one vectored write);
- `NoiseOpener.open` takes whatever the socket gave and returns the plaintext of every
  message completed by it, keeping at most one partial message.

A message that fails authentication ends the connection (`NoiseDecryptError`): after it
the counters can never agree again.
"""

from __future__ import annotations

import struct

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from worker.errors import Refused

TAG_SIZE = 16
MAX_MESSAGE = 65535
MAX_PLAINTEXT = MAX_MESSAGE - TAG_SIZE
LENGTH = struct.Struct(">H")
NONCE = struct.Struct("<4xQ")
#: Noise reserves the last nonce (for rekeying); a connection never gets there.
MAX_NONCE = 2**64 - 1

Buffer = bytes | bytearray | memoryview


class NoiseDecryptError(Refused):
    """A message that does not authenticate (or cannot be one): the connection is lost."""

    source = "transport"


class NoiseSealer:
    """Our direction: plaintext in, length-prefixed Noise messages out."""

    max_plaintext = MAX_PLAINTEXT

    def __init__(self, key: bytes, nonce: int) -> None:
        self._aead = ChaCha20Poly1305(key)
        self.nonce = nonce

    def seal(self, segments: list[Buffer]) -> list[bytes]:
        """`segments`, in order, as consecutive messages of at most MAX_PLAINTEXT bytes
        (never straddling two segments, so none is copied): the pieces to send, in order
        (length prefixes and ciphertexts)."""
        count = sum(max(1, -(-len(s) // MAX_PLAINTEXT)) for s in segments)
        nonce = self.nonce
        if nonce + count >= MAX_NONCE:
            raise OverflowError("Noise nonce space exhausted")
        self.nonce = nonce + count
        encrypt, pack_nonce, pack_len = self._aead.encrypt, NONCE.pack, LENGTH.pack
        parts: list[bytes] = []
        for segment in segments:
            view = memoryview(segment)
            for start in range(0, max(1, len(view)), MAX_PLAINTEXT):
                sealed = encrypt(pack_nonce(nonce), view[start : start + MAX_PLAINTEXT], None)
                nonce += 1
                parts.append(pack_len(len(sealed)))
                parts.append(sealed)
        return parts


class NoiseOpener:
    """The peer's direction: socket bytes in, the plaintext of each whole message out."""

    #: Noise has no end-of-stream message (TLS's close_notify): the socket's end is it.
    closed = False

    def __init__(self, key: bytes, nonce: int) -> None:
        self._aead = ChaCha20Poly1305(key)
        self.nonce = nonce
        self._partial = b""  # the start of a message whose end has not arrived

    @property
    def pending(self) -> int:
        """Bytes held of a message not yet complete."""
        return len(self._partial)

    def open(self, data: Buffer) -> list[bytes]:
        """The plaintexts of the messages `data` completes, in order (maybe none)."""
        plaintexts: list[bytes] = []
        view = memoryview(data)
        pos = self._complete_partial(view, plaintexts) if self._partial else 0
        end = len(view)
        unpack_len = LENGTH.unpack_from
        while end - pos >= LENGTH.size:
            (size,) = unpack_len(view, pos)
            stop = pos + LENGTH.size + size
            if stop > end:
                break
            plaintexts.append(self._decrypt(view[pos + LENGTH.size : stop]))
            pos = stop
        if pos < end:
            self._partial = bytes(view[pos:])
        return plaintexts

    def _complete_partial(self, view: memoryview, plaintexts: list[bytes]) -> int:
        """Finish the held message with the start of `view`; returns how much it took
        (all of `view` if the message is still incomplete)."""
        held, pos = self._partial, 0
        if len(held) < LENGTH.size:
            pos = LENGTH.size - len(held)
            held += bytes(view[:pos])
            if len(held) < LENGTH.size:
                self._partial = held
                return len(view)
        total = LENGTH.size + LENGTH.unpack_from(held)[0]
        need = total - len(held)
        held += bytes(view[pos : pos + need])
        if len(held) < total:
            self._partial = held
            return len(view)
        self._partial = b""
        plaintexts.append(self._decrypt(memoryview(held)[LENGTH.size :]))
        return pos + need

    def _decrypt(self, message: Buffer) -> bytes:
        if len(message) < TAG_SIZE:
            raise NoiseDecryptError("noise_invalid_message", "shorter than its tag")
        try:
            plaintext = self._aead.decrypt(NONCE.pack(self.nonce), message, None)
        except InvalidTag:
            raise NoiseDecryptError("noise_invalid_message", "authentication failed") from None
        self.nonce += 1
        return plaintext

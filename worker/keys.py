"""Authority key pairs: ed25519, stored as base64 JSON like the original's key files."""

from __future__ import annotations

import base64
import binascii
import json
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

PUBLIC_KEY_BYTES = 32


class KeyFileError(ValueError):
    """A key file or encoded key that cannot be used."""


def decode_public_key(name: str) -> bytes:
    """Decode a base64 authority name into its 32 raw bytes, or raise with the reason."""
    try:
        raw = base64.b64decode(name, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise KeyFileError(f"not valid base64: {name!r}") from exc
    if len(raw) != PUBLIC_KEY_BYTES:
        raise KeyFileError(f"expected {PUBLIC_KEY_BYTES} bytes, got {len(raw)}: {name!r}")
    return raw


def encode_key(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def short_name(name: str) -> str:
    """A low-cardinality label for an authority (first 8 base64 characters)."""
    return name[:8]


@dataclass(frozen=True)
class KeyPair:
    """An authority's ed25519 key pair; `name` is the base64 public key used in the committee."""

    name: str
    seed: bytes

    @classmethod
    def generate(cls, seed: bytes | None = None) -> KeyPair:
        seed = seed if seed is not None else os.urandom(32)
        if len(seed) != 32:
            raise KeyFileError(f"ed25519 seed must be 32 bytes, got {len(seed)}")
        public = Ed25519PrivateKey.from_private_bytes(seed).public_key()
        raw = public.public_bytes(Encoding.Raw, PublicFormat.Raw)
        return cls(name=encode_key(raw), seed=seed)

    @property
    def public_bytes(self) -> bytes:
        return decode_public_key(self.name)

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.seed).sign(message)

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "secret": encode_key(self.seed)}, indent=2)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(self.to_json())
        os.chmod(tmp, 0o600)
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> KeyPair:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise KeyFileError(f"cannot read key file {path}: {exc}") from exc
        if not isinstance(data, dict) or set(data) != {"name", "secret"}:
            raise KeyFileError(f"key file {path}: expected exactly the fields 'name' and 'secret'")
        try:
            seed = base64.b64decode(data["secret"], validate=True)
        except (binascii.Error, ValueError, TypeError) as exc:
            raise KeyFileError(f"key file {path}: field 'secret' is not valid base64") from exc
        pair = cls.generate(seed)
        if pair.name != data["name"]:
            raise KeyFileError(f"key file {path}: field 'name' does not match the secret key")
        return pair


def verify(name: str, message: bytes, signature: bytes) -> bool:
    """Check an ed25519 signature by the authority `name`; False on any failure."""
    try:
        Ed25519PublicKey.from_public_bytes(decode_public_key(name)).verify(signature, message)
    except (InvalidSignature, KeyFileError, ValueError):
        return False
    return True

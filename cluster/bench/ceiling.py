"""The machine's own speed for the work the pipeline does, and the knee set against it.

Per transaction byte, across a committee of N on this one machine, the pipeline hashes
every batch N times (its author seals it, each peer checks the digest), stores it N
times (a synced store write at every authority), copies it over loopback N - 1 times
(author to each peer) and, over libp2p, encrypts and decrypts each copy (2 (N - 1)
AEAD passes: AES-128-GCM over TLS records, ChaCha20-Poly1305 over Noise messages).
Each ceiling is measured on one thread with batch-size buffers; the knee's
implied MB/s of each kind is set against it, and `ceiling_tx_s` is the rate at which
that work alone, at those speeds, would fill every core: an upper bound for any
implementation of the same protocol on this machine. `knee / ceiling_tx_s` says how much
of the machine the pipeline turns into protocol work; the rest is the testbed's overhead.
"""

from __future__ import annotations

import hashlib
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from worker.config import DEFAULT_LIBP2P_SECURITY
from worker.store import BatchStore
from worker.wire.messages import DIGEST_BYTES

#: Noise's largest plaintext per transport message (65,535 minus the 16-byte tag)
NOISE_CHUNK = 65_519
#: a full TLS 1.3 record's plaintext: 16 KiB of content and its inner content type
TLS_RECORD = 16_385
#: per libp2p security: what it seals with (the first suite we offer), and in what units
AEADS: dict[str, tuple[str, Callable[[bytes], Any], int, int]] = {
    "tls": ("AES-128-GCM", AESGCM, 16, TLS_RECORD),
    "noise": ("ChaCha20-Poly1305", ChaCha20Poly1305, 32, NOISE_CHUNK),
}
#: buffer size of the machine-speed reading: fixed, so readings compare whatever a run's
#: batch size (this is the default one)
SPEED_BUFFER = 500_000


def _timed(seconds: float, once: Callable[[], int]) -> tuple[float, int]:
    """Call `once` (returns bytes processed) for at least `seconds`: (elapsed, bytes)."""
    done, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds or done == 0:
        done += once()
    return elapsed, done


def hash_mb_s(size: int, seconds: float) -> float:
    """SHA-512 (the batch digest's hash) over `size`-byte buffers."""
    buf = os.urandom(size)

    def once() -> int:
        hashlib.sha512(buf).digest()
        return size

    elapsed, done = _timed(seconds, once)
    return round(done / elapsed / 1e6, 1)


def machine_speed(seconds: float) -> dict[str, Any]:
    """A run's reference reading of the machine (the ceiling's hash, one core), so two
    runs' CPU figures can be set side by side even when the VM's speed drifted."""
    return {"sha512_mb_s": hash_mb_s(SPEED_BUFFER, seconds), "seconds": round(seconds, 3)}


def store_rates(size: int, seconds: float) -> dict[str, float]:
    """Synced puts of `size`-byte batches under random digest keys into the worker's own
    store (worker/store.py) in a temp dir, one write each: MB/s and puts/s. The keys are
    random as digests are; sequential keys would spare LevelDB work a run cannot avoid."""
    value = os.urandom(size)
    with tempfile.TemporaryDirectory(prefix="bench-store-") as path:
        store = BatchStore(path)
        count = 0

        def once() -> int:
            nonlocal count
            count += 1
            store.put(os.urandom(DIGEST_BYTES), value)
            return size

        try:
            elapsed, done = _timed(seconds, once)
        finally:
            store.close()
    return {"mb_s": round(done / elapsed / 1e6, 1), "puts_s": round(count / elapsed, 1)}


def loopback_mb_s(size: int, seconds: float) -> float:
    """Bytes copied over a loopback TCP connection between two threads, in `size` writes."""
    server = socket.create_server(("127.0.0.1", 0))
    sender = socket.create_connection(server.getsockname())
    receiver, _ = server.accept()
    server.close()
    received = 0

    def drain() -> None:
        nonlocal received
        buf = bytearray(1 << 20)
        while n := receiver.recv_into(buf):
            received += n

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    payload = os.urandom(size)
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        sender.sendall(payload)
    sender.shutdown(socket.SHUT_WR)
    reader.join()
    elapsed = time.perf_counter() - start
    sender.close()
    receiver.close()
    return round(received / elapsed / 1e6, 1)


def aead_mb_s(seconds: float, security: str) -> float:
    """The AEAD of libp2p's `security` (OpenSSL via `cryptography`) over its units: full
    TLS records (5-byte header as associated data) or Noise messages."""
    _name, cipher, key_size, unit = AEADS[security]
    aead = cipher(os.urandom(key_size))
    chunk, nonce = os.urandom(unit), bytes(12)
    header = bytes(5) if security == "tls" else None

    def once() -> int:
        aead.encrypt(nonce, chunk, header)
        return unit

    elapsed, done = _timed(seconds, once)
    return round(done / elapsed / 1e6, 1)


def measure_ceiling(
    batch_size: int, seconds: float, security: str = DEFAULT_LIBP2P_SECURITY
) -> dict[str, Any]:
    """Every ceiling, `seconds` each, with `batch_size`-byte buffers; the AEAD's is that
    of the libp2p `security` the knees are measured with."""
    store = store_rates(batch_size, seconds)
    return {
        "batch_size": batch_size,
        "seconds_each": seconds,
        "cores": os.cpu_count() or 1,
        "hash_mb_s": hash_mb_s(batch_size, seconds),
        "store_mb_s": store["mb_s"],
        "store_puts_s": store["puts_s"],
        "loopback_mb_s": loopback_mb_s(batch_size, seconds),
        "aead": AEADS[security][0],
        "aead_mb_s": aead_mb_s(seconds, security),
    }


def passes(authorities: int, transport: str) -> dict[str, int]:
    """How often the committee does each kind of work per transaction byte."""
    n = authorities
    kinds = {"hash": n, "store": n, "loopback": n - 1}
    if transport == "libp2p":
        kinds["aead"] = 2 * (n - 1)
    return kinds


def against_ceiling(
    knee_tx_s: float, tx_size: int, authorities: int, transport: str, ceiling: dict[str, Any]
) -> dict[str, Any]:
    """The knee's implied MB/s of each kind against its ceiling, and the ceiling in tx/s."""
    payload = knee_tx_s * tx_size / 1e6
    kinds: dict[str, dict[str, float]] = {}
    core_seconds_per_tx = 0.0
    for kind, times in passes(authorities, transport).items():
        limit = ceiling[f"{kind}_mb_s"]
        implied = payload * times
        kinds[kind] = {
            "passes": times,
            "implied_mb_s": round(implied, 2),
            "ceiling_mb_s": limit,
            "fraction": round(implied / limit, 4) if limit else 0.0,
        }
        core_seconds_per_tx += times * tx_size / (limit * 1e6) if limit else 0.0
    ceiling_tx_s = ceiling["cores"] / core_seconds_per_tx if core_seconds_per_tx else 0.0
    return {
        "kinds": kinds,
        "ceiling_tx_s": round(ceiling_tx_s),
        "knee_fraction": round(knee_tx_s / ceiling_tx_s, 4) if ceiling_tx_s else 0.0,
    }


def aead_only_ratio(
    tcp_knee_tx_s: float,
    machine_share: float | None,
    tx_size: int,
    authorities: int,
    ceiling: dict[str, Any],
) -> float | None:
    """The libp2p/TCP knee ratio if the AEAD were libp2p's only extra cost, from TCP's
    knee and the machine share it used there: libp2p, paying the AEAD on top of TCP's
    work, runs out of that same share at S / (S + A) of TCP's knee, where A is the share
    the AEAD would take at TCP's knee. None when it cannot be told (no AEAD ceiling, no
    CPU reading)."""
    limit = ceiling.get("aead_mb_s") or 0.0
    if not tcp_knee_tx_s or not machine_share or not limit:
        return None
    aead_mb_s = tcp_knee_tx_s * tx_size / 1e6 * passes(authorities, "libp2p")["aead"]
    share = aead_mb_s / limit / ceiling["cores"]
    return round(machine_share / (machine_share + share), 3)

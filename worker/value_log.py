"""The bodies of stored batches: one append-only file, written once, read by offset.

LevelDB is a poor home for 500 KB values under random (digest) keys: every byte is
written to its log, again to a level-0 table, then again at each level it is compacted
into, and once level 0 backs up LevelDB stops all writes until compaction catches up.
Measured here with synced 500 KB puts: 3-4 s write stalls within 10 s, and sustained
throughput falling to half the disk's, on a machine whose two cores the committee
shares. So the store keeps the bodies here (each byte written once, sequentially) and
only a 12-byte locator per batch in LevelDB (the key-value separation of WiscKey, as in
Badger or RocksDB's BlobDB).

Each record is a header (body length, digest) and the body, so the file describes
itself. A record counts once its locator is in LevelDB, and the locator is written only
after the record is on disk: a crash can leave an unreferenced tail, never a locator to
missing bytes. On open, the end of the file is the next append offset, so such a tail is
just skipped space.

Once a synced append is on disk its pages are dropped from the page cache: nothing reads
a batch back on the hot path (only a peer's sync request does, from disk). Kept, they
grow the cache by every byte stored, and each new cache page is fresh memory; on a VM
that hands freed memory back to its host (virtio-balloon free page reporting, as here)
fresh memory faults at the host on first touch. Measured here in paired
`narwhal-testbed local --rate 100000` runs: the copy into the page cache fell from
1,766-2,887 to 62-89 perf samples, and CPU per delivered MB by 7-23 % (both transports).
"""

from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Sequence
from pathlib import Path

from worker.vectored import write_vectored
from worker.wire.messages import DIGEST_BYTES

HEADER = struct.Struct(f"<I{DIGEST_BYTES}s")  # body length, digest
LOCATOR = struct.Struct("<QI")  # offset of the body, its length


def _drop_cached(fd: int, offset: int, length: int) -> None:
    """Let the kernel forget the (clean, synced) pages of this range; where it cannot
    (no posix_fadvise, or it refuses), they stay cached as before: only advice."""
    if length > 0 and hasattr(os, "posix_fadvise"):
        with contextlib.suppress(OSError):
            os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


class CorruptValueLog(Exception):
    """A locator points past the end of the file: the log was cut behind the store."""


class ValueLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._append = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._read = os.open(path, os.O_RDONLY)
        self._end = os.fstat(self._append).st_size

    def append(self, records: Sequence[tuple[bytes, bytes]], sync: bool) -> list[bytes]:
        """Append (digest, body) records in one vectored write; returns their locators.
        Durable on return if `sync`; on an error the file is cut back to where it was."""
        buffers: list[bytes] = []
        locators = []
        offset = self._end
        for digest, body in records:
            buffers += (HEADER.pack(len(body), digest), body)
            offset += HEADER.size
            locators.append(LOCATOR.pack(offset, len(body)))
            offset += len(body)
        try:
            if write_vectored(self._append, buffers):  # a file takes all, or raises
                raise OSError(f"{self.path}: short write")
            if sync:
                os.fdatasync(self._append)
        except OSError:
            os.ftruncate(self._append, self._end)
            raise
        if sync:  # the bytes are durable: a failure to drop them must not undo the write
            _drop_cached(self._append, self._end, offset - self._end)
        self._end = offset
        return locators

    def read(self, locator: bytes) -> bytes:
        offset, length = LOCATOR.unpack(locator)
        body = os.pread(self._read, length, offset)
        if len(body) != length:
            raise CorruptValueLog(f"{self.path}: {length} bytes at {offset}, file ends sooner")
        return body

    def close(self) -> None:
        os.close(self._append)
        os.close(self._read)

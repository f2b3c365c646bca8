"""The worker's batch store: LevelDB (plyvel), digest -> serialized batch message.

Two key spaces in one database: `b/` holds the batches, `s/` marks the digests this
worker put on the wire (so what it sent before a crash is still known afterwards).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import plyvel


class BatchStore:
    """One LevelDB per worker. Writes are synced by default so an ack means "on disk"."""

    def __init__(self, path: str | Path, sync: bool = True) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.sync = sync
        self._db = plyvel.DB(str(self.path), create_if_missing=True)
        self._batches = self._db.prefixed_db(b"b/")
        self._sent = self._db.prefixed_db(b"s/")

    def put(self, digest: bytes, serialized: bytes) -> None:
        self._batches.put(digest, serialized, sync=self.sync)

    def get(self, digest: bytes) -> bytes | None:
        return self._batches.get(digest)

    def __contains__(self, digest: bytes) -> bool:
        return self._batches.get(digest) is not None

    def digests(self) -> Iterator[bytes]:
        with self._batches.iterator(include_value=False) as it:
            yield from it

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        with self._batches.iterator() as it:
            yield from it

    def __len__(self) -> int:
        return sum(1 for _ in self.digests())

    def mark_sent(self, digest: bytes) -> None:
        """Unsynced: it must survive the process (a crash), not the machine."""
        self._sent.put(digest, b"")

    def sent_digests(self) -> Iterator[bytes]:
        with self._sent.iterator(include_value=False) as it:
            yield from it

    @property
    def closed(self) -> bool:
        return self._db.closed

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()

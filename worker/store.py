"""The worker's batch store: LevelDB (plyvel), digest -> serialized batch message.

Three key spaces in one database: `b/` holds the batches, `s/` marks the digests this
worker put on the wire (so what it sent before a crash is still known afterwards), and
`r/` holds the reports to the primary not yet confirmed delivered. A batch and its
pending report are written in one (synced) write batch, so "stored" implies "will be
reported": a restarted worker replays `pending_reports()` and the primary connector
clears each one once the primary confirmed it (docs/guarantees.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import plyvel

#: What a store operation may raise when the disk or the descriptors run out.
STORE_ERRORS = (plyvel.Error, OSError)
#: LevelDB keeps this many table files open at most (its default, 1000, could exhaust
#: the process's descriptors alongside the sockets).
MAX_OPEN_FILES = 100


class BatchStore:
    """One LevelDB per worker. Writes are synced by default so an ack means "on disk"."""

    def __init__(self, path: str | Path, sync: bool = True) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.sync = sync
        self._db = plyvel.DB(str(self.path), create_if_missing=True, max_open_files=MAX_OPEN_FILES)
        self._batches = self._db.prefixed_db(b"b/")
        self._sent = self._db.prefixed_db(b"s/")
        self._reports = self._db.prefixed_db(b"r/")

    def put(self, digest: bytes, serialized: bytes, report: int | None = None) -> None:
        """Store a batch, and with it (same write) the report of kind `report` if given."""
        with self._db.write_batch(sync=self.sync) as batch:
            batch.put(b"b/" + digest, serialized)
            if report is not None:
                batch.put(b"r/" + bytes([report]) + digest, b"")

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

    # -- reports not yet confirmed by the primary ---------------------------------------
    def pending_reports(self) -> list[tuple[int, bytes]]:
        """(report kind, digest) of every stored batch whose report is unconfirmed."""
        with self._reports.iterator(include_value=False) as it:
            return [(key[0], key[1:]) for key in it]

    def reports_delivered(self, reports: Iterable[tuple[int, bytes]]) -> None:
        """Unsynced: losing a deletion only repeats a report (the primary keeps sets)."""
        if self.closed:
            return
        with self._reports.write_batch() as batch:
            for kind, digest in reports:
                batch.delete(bytes([kind]) + digest)

    @property
    def closed(self) -> bool:
        return self._db.closed

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()

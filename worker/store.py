"""The worker's batch store: LevelDB (plyvel), digest -> serialized batch message.

Large batch bodies live in `batches.log` beside the database (worker/value_log.py says
why) and LevelDB maps each digest to its body's place there; small ones stay in LevelDB,
where they cost nothing to compact and a write needs one sync, not two. Two key spaces
in one database: `b/` holds the batches (a tag byte, then the body or its locator) and
`r/` the reports to the primary not yet confirmed delivered. A batch and its pending
report are written in one (synced) write batch, so "stored" implies "will be reported":
a restarted worker replays `pending_reports()` and the primary connector clears each one
once the primary confirmed it (docs/guarantees.md). Several batches may share one
synced write (`put_many`, the group commit of worker/store_writer.py).

The digests this worker put on the wire go to `sent.log` beside the database, appended
unsynced before each send: they must survive the process (a crash), not the machine,
and an append never waits behind a synced LevelDB write, as a LevelDB put would (older
stores kept them under `s/`, still read).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import plyvel

from worker.value_log import CorruptValueLog, ValueLog
from worker.wire.messages import DIGEST_BYTES

#: What a store operation may raise when the disk or the descriptors run out.
STORE_ERRORS = (plyvel.Error, OSError, CorruptValueLog)
#: LevelDB keeps this many table files open at most (its default, 1000, could exhaust
#: the process's descriptors alongside the sockets).
MAX_OPEN_FILES = 100
SENT_LOG = "sent.log"
VALUE_LOG = "batches.log"
#: Bodies of at least this many bytes go to the value log (RocksDB BlobDB's min_blob_size).
MIN_LOGGED_BODY = 64 << 10
INLINE, LOGGED = b"\x00", b"\x01"

#: One write: (digest, serialized batch, report kind or None).
Write = tuple[bytes, bytes, int | None]


class BatchStore:
    """One LevelDB per worker. Writes are synced by default so an ack means "on disk"."""

    def __init__(self, path: str | Path, sync: bool = True) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.sync = sync
        self._db = plyvel.DB(
            str(self.path),
            create_if_missing=True,
            max_open_files=MAX_OPEN_FILES,
        )
        self._values = ValueLog(self.path / VALUE_LOG)
        self._batches = self._db.prefixed_db(b"b/")
        self._legacy_sent = self._db.prefixed_db(b"s/")
        self._reports = self._db.prefixed_db(b"r/")
        self._sent = os.open(self.path / SENT_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def put(self, digest: bytes, serialized: bytes, report: int | None = None) -> None:
        """Store a batch, and with it (same write) the report of kind `report` if given."""
        self.put_many([(digest, serialized, report)])

    def put_many(
        self, writes: Iterable[Write], delivered: Iterable[tuple[int, bytes]] = ()
    ) -> None:
        """Several batches (each with its report) in one write, synced if the store is and
        there is a batch; reports confirmed `delivered` are forgotten in the same write.
        The bodies are on disk before LevelDB learns where they are."""
        writes = list(writes)
        if self.closed and not writes:
            return  # only deletions, after the worker stopped: nothing to lose
        sync = self.sync and bool(writes)
        large = [(d, body) for d, body, _ in writes if len(body) >= MIN_LOGGED_BODY]
        locators = iter(self._values.append(large, sync) if large else ())
        with self._db.write_batch(sync=sync) as batch:
            for digest, body, report in writes:
                if len(body) >= MIN_LOGGED_BODY:
                    batch.put(b"b/" + digest, LOGGED + next(locators))
                else:
                    batch.put(b"b/" + digest, INLINE + body)
                if report is not None:
                    batch.put(b"r/" + bytes([report]) + digest, b"")
            for kind, digest in delivered:
                batch.delete(b"r/" + bytes([kind]) + digest)

    def get(self, digest: bytes) -> bytes | None:
        value = self._batches.get(digest)
        return None if value is None else self._body(value)

    def __contains__(self, digest: bytes) -> bool:
        return self._batches.get(digest) is not None

    def digests(self) -> Iterator[bytes]:
        with self._batches.iterator(include_value=False) as it:
            yield from it

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        with self._batches.iterator() as it:
            for digest, value in it:
                yield digest, self._body(value)

    def _body(self, value: bytes) -> bytes:
        return value[1:] if value[:1] == INLINE else self._values.read(value[1:])

    def __len__(self) -> int:
        return sum(1 for _ in self.digests())

    # -- digests put on the wire --------------------------------------------------------
    def mark_sent(self, digest: bytes) -> None:
        """Unsynced: it must survive the process (a crash), not the machine."""
        os.write(self._sent, digest)

    def sent_digests(self) -> Iterator[bytes]:
        data = (self.path / SENT_LOG).read_bytes()
        whole = len(data) - len(data) % DIGEST_BYTES  # a crash may cut the last record
        for i in range(0, whole, DIGEST_BYTES):
            yield data[i : i + DIGEST_BYTES]
        with self._legacy_sent.iterator(include_value=False) as it:
            yield from it

    # -- reports not yet confirmed by the primary ---------------------------------------
    def pending_reports(self) -> list[tuple[int, bytes]]:
        """(report kind, digest) of every stored batch whose report is unconfirmed."""
        with self._reports.iterator(include_value=False) as it:
            return [(key[0], key[1:]) for key in it]

    def reports_delivered(self, reports: Iterable[tuple[int, bytes]]) -> None:
        """Unsynced: losing a deletion only repeats a report (the primary keeps sets)."""
        self.put_many((), reports)

    @property
    def closed(self) -> bool:
        return self._db.closed

    def close(self) -> None:
        if not self._db.closed:
            self._db.close()
            self._values.close()
            os.close(self._sent)

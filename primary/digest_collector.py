"""The primary side of this testbed: a digest collector, not a DAG-building primary.

It listens on the authority's `worker_to_primary` address and records which digests
each of its workers reported as `OurBatch` (sealed and quorum-acked here) or
`OthersBatch` (received from a peer and stored). The harness compares these sets
across authorities to check dissemination.

Reports are the checker's evidence, so only the authority's own workers may send them:
each connection starts with a random challenge that the worker answers with a hello
signed by the authority's key (`authority`; without it, any validly signed hello is
taken, which only proves the sender holds *some* key). Reports must name the worker id
the hello named. What was processed is confirmed with a running count (the worker
forgets a report only once confirmed). Unauthenticated connections are capped and must
authenticate within HELLO_TIMEOUT; a newer authenticated link of a worker replaces its
older one. The wire is specified in docs/protocol.md.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from worker.changes import Changes
from worker.keys import encode_key, verify
from worker.streams import (
    STREAM_ERRORS,
    ConnectionLimit,
    Deadlines,
    read_frame,
    read_frames,
    serve_tcp,
)
from worker.wire.frames import FrameBuffer, FrameError, Truncated, frame
from worker.wire.messages import WireError
from worker.wire.reports import (
    MAX_REPORT_BYTES,
    NONCE_BYTES,
    ReportKind,
    decode_hello,
    decode_report,
    encode_confirmation,
    hello_message,
)

log = logging.getLogger(__name__)

#: Seconds a connection has to authenticate, and to finish any frame after that.
HELLO_TIMEOUT = 10.0
#: Connections that have not authenticated yet, at most (the others are closed at once).
MAX_UNAUTHENTICATED = 8
#: Seconds a confirmation may take to be written before the link is dropped.
WRITE_TIMEOUT = 10.0


@dataclass
class CollectedDigests:
    ours: dict[int, set[bytes]] = field(default_factory=dict)
    others: dict[int, set[bytes]] = field(default_factory=dict)

    def add(self, kind: ReportKind, digest: bytes, worker_id: int) -> None:
        target = self.ours if kind is ReportKind.OUR_BATCH else self.others
        target.setdefault(worker_id, set()).add(digest)

    def to_json(self) -> dict[str, dict[str, list[str]]]:
        return {
            "ours": {str(w): sorted(d.hex() for d in ds) for w, ds in self.ours.items()},
            "others": {str(w): sorted(d.hex() for d in ds) for w, ds in self.others.items()},
        }


class DigestCollector:
    def __init__(self, host: str, port: int, *, authority: str | None = None) -> None:
        """`authority`: the committee name (base64 key) whose workers may report here."""
        self.host, self.port = host, port
        self.authority = authority
        self.digests = CollectedDigests()
        self.rejections: Counter[str] = Counter()
        self.reports = 0
        self._changes = Changes()
        self._unauthenticated = ConnectionLimit(MAX_UNAUTHENTICATED)
        self._links: dict[int, trio.CancelScope] = {}

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; re-checked after every report or refusal."""
        await self._changes.wait_until(predicate)

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_tcp(self.host, self.port, self._handle, task_status=task_status)

    def _refuse(self, reason: str) -> None:
        self.rejections[reason] += 1
        self._changes.notify()

    async def _handle(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                buffer = FrameBuffer(MAX_REPORT_BYTES)  # kept: reports may follow the hello
                worker_id = await self._authenticate(stream, buffer)
                if worker_id is None:
                    return
                with trio.CancelScope() as scope:
                    if (older := self._links.get(worker_id)) is not None:
                        older.cancel()
                    self._links[worker_id] = scope
                    try:
                        await self._collect(stream, buffer, worker_id)
                    finally:
                        if self._links.get(worker_id) is scope:
                            del self._links[worker_id]
        except (Truncated, trio.TooSlowError, *STREAM_ERRORS) as exc:
            log.debug("worker link closed: %s", exc)
        except FrameError as exc:
            self._refuse(exc.reason)

    async def _authenticate(self, stream: trio.SocketStream, buffer: FrameBuffer) -> int | None:
        """The worker id of a hello signed by our authority, or None (counted)."""
        limit = self._unauthenticated
        if limit.active >= limit.limit:
            self._refuse("too_many_connections")
            return None
        limit.active += 1
        try:
            nonce = os.urandom(NONCE_BYTES)
            with trio.fail_after(HELLO_TIMEOUT):
                await stream.send_all(frame(nonce))
            deadlines = Deadlines(HELLO_TIMEOUT, HELLO_TIMEOUT)
            data = await read_frame(stream, buffer, deadlines=deadlines)
        finally:
            limit.active -= 1
        if data is None:
            return None
        try:
            hello = decode_hello(data)  # type: ignore[arg-type]
        except WireError:
            self._refuse("bad_hello")
            return None
        name = encode_key(hello.authority)
        if self.authority is not None and name != self.authority:
            self._refuse("unknown_authority")
            return None
        if not verify(
            name, hello_message(nonce, hello.authority, hello.worker_id), hello.signature
        ):
            self._refuse("bad_signature")
            return None
        return hello.worker_id

    async def _collect(
        self, stream: trio.SocketStream, buffer: FrameBuffer, worker_id: int
    ) -> None:
        processed = 0
        deadlines = Deadlines(frame=HELLO_TIMEOUT)
        while (frames := await read_frames(stream, buffer, deadlines=deadlines)) is not None:
            for data in frames:
                processed += 1
                try:
                    report = decode_report(data)  # type: ignore[arg-type]
                except WireError as exc:
                    self.rejections[exc.reason] += 1
                    continue
                if report.worker_id != worker_id:
                    self.rejections["wrong_worker"] += 1
                    continue
                self.digests.add(report.kind, report.digest, report.worker_id)
                self.reports += 1
            self._changes.notify()
            with trio.fail_after(WRITE_TIMEOUT):
                await stream.send_all(frame(encode_confirmation(processed)))

"""The primary side of this testbed: a digest collector, not a DAG-building primary.

It listens on the authority's `worker_to_primary` address and records which digests
each of its workers reported as `OurBatch` (sealed and quorum-acked here) or
`OthersBatch` (received from a peer and stored). The harness compares these sets
across authorities to check dissemination.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from worker.changes import Changes
from worker.streams import STREAM_ERRORS, read_frames, serve_tcp
from worker.wire.frames import FrameBuffer, FrameError, Truncated
from worker.wire.messages import WireError
from worker.wire.reports import MAX_REPORT_BYTES, ReportKind, decode_report

log = logging.getLogger(__name__)


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
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.digests = CollectedDigests()
        self.rejections: Counter[str] = Counter()
        self.reports = 0
        self._changes = Changes()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; re-checked after every report or refusal."""
        await self._changes.wait_until(predicate)

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_tcp(self.host, self.port, self._handle, task_status=task_status)

    async def _handle(self, stream: trio.SocketStream) -> None:
        buffer = FrameBuffer(MAX_REPORT_BYTES)
        try:
            async with stream:
                while (frames := await read_frames(stream, buffer)) is not None:
                    for data in frames:
                        try:
                            report = decode_report(data)  # type: ignore[arg-type]
                        except WireError as exc:
                            self.rejections[exc.reason] += 1
                            continue
                        self.digests.add(report.kind, report.digest, report.worker_id)
                        self.reports += 1
                    self._changes.notify()
        except (Truncated, *STREAM_ERRORS) as exc:
            log.debug("worker link closed: %s", exc)
        except FrameError as exc:
            self.rejections[exc.reason] += 1
            self._changes.notify()

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

from worker.primary_connector import ReportKind, decode_report
from worker.wire.frames import FrameReader, FrameTooLarge

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
        self._changed = trio.Event()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; re-checked after every report received."""
        while not predicate():
            await self._changed.wait()

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        async with trio.open_nursery() as nursery:
            task_status.started(f"{self.host}:{self.port}")
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        reader = FrameReader(stream, max_frame=1024)
        try:
            async with stream:
                while (frames := await reader.read_frames()) is not None:
                    for data in frames:
                        try:
                            report = decode_report(data)
                        except ValueError:
                            self.rejections["malformed"] += 1
                            continue
                        self.digests.add(report.kind, report.digest, report.worker_id)
                        self.reports += 1
                    self._changed.set()
                    self._changed = trio.Event()
        except FrameTooLarge:
            self.rejections["oversized"] += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("worker link closed: %s", exc)

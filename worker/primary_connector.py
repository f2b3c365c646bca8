"""Worker -> primary reports: `OurBatch(digest, worker_id)` and `OthersBatch(digest, worker_id)`.

Frames are u32-length-prefixed msgpack arrays `[kind, digest, worker_id]`. The reporter
keeps one connection to its primary (the digest collector in this testbed), queues
through a bounded channel (back-pressure rather than loss) and redials with backoff.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import IntEnum

import msgpack
import trio

from worker.wire.frames import frame
from worker.wire.messages import DIGEST_BYTES

log = logging.getLogger(__name__)


class ReportKind(IntEnum):
    OUR_BATCH = 0
    OTHERS_BATCH = 1


@dataclass(frozen=True, slots=True)
class Report:
    kind: ReportKind
    digest: bytes
    worker_id: int


def encode_report(report: Report) -> bytes:
    return msgpack.packb([int(report.kind), report.digest, report.worker_id], use_bin_type=True)


def decode_report(data: bytes) -> Report:
    """Raises ValueError on anything but a well-formed report."""
    try:
        kind, digest, worker_id = msgpack.unpackb(data, raw=False)
        kind = ReportKind(kind)
    except Exception as exc:
        raise ValueError(f"malformed report: {exc}") from exc
    if type(digest) is not bytes or len(digest) != DIGEST_BYTES or type(worker_id) is not int:
        raise ValueError("malformed report fields")
    return Report(kind, digest, worker_id)


class PrimaryReporter:
    """Delivers reports in order to the primary, reconnecting until it is reachable."""

    def __init__(self, host: str, port: int, capacity: int = 1_000) -> None:
        self.host, self.port = host, port
        self._tx, self._rx = trio.open_memory_channel[Report](capacity)
        self.sent = 0

    async def report(self, report: Report) -> None:
        await self._tx.send(report)

    @property
    def queued(self) -> int:
        return self._rx.statistics().current_buffer_used

    async def run(self) -> None:
        delay = 0.05
        unsent: list[Report] = []
        while True:
            try:
                stream = await trio.open_tcp_stream(self.host, self.port)
            except OSError as exc:
                log.debug("primary %s:%s unreachable: %s", self.host, self.port, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            try:
                async with stream:
                    while True:
                        if not unsent:
                            unsent.append(await self._rx.receive())
                        while len(unsent) < 256:
                            try:
                                unsent.append(self._rx.receive_nowait())
                            except trio.WouldBlock:
                                break
                        await stream.send_all(b"".join(frame(encode_report(r)) for r in unsent))
                        self.sent += len(unsent)
                        unsent = []
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                # What failed to go out is re-sent on the next link; the collector keeps
                # sets, so a repeat is harmless where a loss would not be.
                log.debug("primary link lost: %s", exc)

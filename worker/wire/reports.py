"""Worker -> primary reports: `OurBatch(digest, worker_id)` and `OthersBatch(digest, worker_id)`.

Each report is a msgpack array `[kind, digest, worker_id]` in a plain frame
(worker/wire/frames.py). Shared by the worker's primary connector and the primary's
digest collector, so both sides read one definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import msgpack

from worker.wire.messages import DIGEST_BYTES, WireError

#: A report frame is ~50 bytes; anything much larger is refused from its header.
MAX_REPORT_BYTES = 1024


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
    """Raises WireError("malformed") on anything but a well-formed report."""
    try:
        kind, digest, worker_id = msgpack.unpackb(data, raw=False)
        kind = ReportKind(kind)
    except Exception as exc:
        raise WireError("malformed", f"report: {exc}") from exc
    if type(digest) is not bytes or len(digest) != DIGEST_BYTES or type(worker_id) is not int:
        raise WireError("malformed", "report fields")
    return Report(kind, digest, worker_id)

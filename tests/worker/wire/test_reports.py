"""Worker -> primary report messages."""

from __future__ import annotations

import msgpack
import pytest

from worker.errors import Refused
from worker.wire.reports import Report, ReportKind, decode_report, encode_report


@pytest.mark.parametrize("kind", list(ReportKind))
def test_reports_round_trip(kind: ReportKind) -> None:
    report = Report(kind, bytes(range(32)), 3)
    assert decode_report(encode_report(report)) == report


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",
        msgpack.packb([0, bytes(31), 0]),
        msgpack.packb([7, bytes(32), 0]),
        msgpack.packb([0, bytes(32), "0"]),
        msgpack.packb([0, bytes(32)]),
    ],
)
def test_malformed_reports_are_refused(data: bytes) -> None:
    with pytest.raises(Refused) as err:
        decode_report(data)
    assert (err.value.source, err.value.reason) == ("wire", "malformed")

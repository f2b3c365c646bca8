"""The digest collector: reports in, digest sets out; refusals counted, never raised."""

from __future__ import annotations

import trio

from primary.digest_collector import DigestCollector
from worker.wire.frames import LENGTH, frame
from worker.wire.reports import Report, ReportKind, encode_report


async def test_reports_are_collected_and_bad_ones_counted() -> None:
    collector = DigestCollector("127.0.0.1", 0)
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    collector.port = listeners[0].socket.getsockname()[1]
    for listener in listeners:
        await listener.aclose()
    ours, theirs = (
        Report(ReportKind.OUR_BATCH, bytes(32), 0),
        Report(ReportKind.OTHERS_BATCH, b"\x01" * 32, 1),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.serve)
        stream = await trio.open_tcp_stream("127.0.0.1", collector.port)
        async with stream:
            await stream.send_all(
                frame(encode_report(ours)) + frame(b"\xc1") + frame(encode_report(theirs))
            )
            await collector.wait_for(lambda: collector.reports == 2)
            await stream.send_all(LENGTH.pack(1 << 20))  # far beyond a report
            await collector.wait_for(lambda: collector.rejections["oversized"] == 1)
        nursery.cancel_scope.cancel()
    assert collector.rejections == {"malformed": 1, "oversized": 1}
    assert collector.digests.to_json() == {
        "ours": {"0": [bytes(32).hex()]},
        "others": {"1": [(b"\x01" * 32).hex()]},
    }

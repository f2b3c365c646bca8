"""The digest collector: reports in, digest sets out; refusals counted, never raised.
Only the authority's own workers may report (issue 12 item 14)."""

from __future__ import annotations

import trio

from primary.digest_collector import DigestCollector
from worker.keys import KeyPair
from worker.streams import read_frame
from worker.wire.frames import LENGTH, FrameBuffer, frame
from worker.wire.reports import (
    PrimaryHello,
    Report,
    ReportKind,
    decode_confirmation,
    encode_hello,
    encode_report,
    hello_message,
)

OURS = Report(ReportKind.OUR_BATCH, bytes(32), 0)
THEIRS = Report(ReportKind.OTHERS_BATCH, b"\x01" * 32, 0)


async def _introduce(port: int, keypair: KeyPair, worker_id: int = 0) -> trio.SocketStream:
    """A worker's side of the handshake: answer the challenge with a signed hello."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    nonce = await read_frame(stream, FrameBuffer(64))
    assert isinstance(nonce, bytes)
    authority = keypair.public_bytes
    signature = keypair.sign(hello_message(nonce, authority, worker_id))
    await stream.send_all(frame(encode_hello(PrimaryHello(authority, worker_id, signature))))
    return stream


async def test_reports_are_collected_and_bad_ones_counted() -> None:
    me = KeyPair.generate()
    collector = DigestCollector("127.0.0.1", 0, authority=me.name)
    async with trio.open_nursery() as nursery:
        address = await nursery.start(collector.serve)
        port = int(address.rpartition(":")[2])
        stream = await _introduce(port, me)
        async with stream:
            await stream.send_all(
                frame(encode_report(OURS)) + frame(b"\xc1") + frame(encode_report(THEIRS))
            )
            await collector.wait_for(lambda: collector.reports == 2)
            buffer, confirmed = FrameBuffer(64), 0
            while confirmed < 3:  # every processed frame is confirmed, refused or not
                confirmed = decode_confirmation(await read_frame(stream, buffer))  # type: ignore[arg-type]
            await stream.send_all(LENGTH.pack(1 << 20))  # far beyond a report
            await collector.wait_for(lambda: collector.rejections["oversized"] == 1)
        nursery.cancel_scope.cancel()
    assert collector.rejections == {"malformed": 1, "oversized": 1}
    assert collector.digests.to_json() == {
        "ours": {"0": [bytes(32).hex()]},
        "others": {"0": [(b"\x01" * 32).hex()]},
    }


async def test_forged_reports_are_refused() -> None:
    """Unauthenticated reports (the old protocol), another key's hello, a replayed hello
    and a report for another worker id never become evidence."""
    me, stranger = KeyPair.generate(), KeyPair.generate()
    collector = DigestCollector("127.0.0.1", 0, authority=me.name)
    async with trio.open_nursery() as nursery:
        port = int((await nursery.start(collector.serve)).rpartition(":")[2])
        raw = await trio.open_tcp_stream("127.0.0.1", port)  # no hello at all
        await raw.send_all(frame(encode_report(OURS)))
        await collector.wait_for(lambda: collector.rejections["bad_hello"] == 1)
        forged = await _introduce(port, stranger)
        await forged.send_all(frame(encode_report(OURS)))
        await collector.wait_for(lambda: collector.rejections["unknown_authority"] == 1)
        replay = await trio.open_tcp_stream("127.0.0.1", port)
        await read_frame(replay, FrameBuffer(64))
        stale = PrimaryHello(
            me.public_bytes, 0, me.sign(hello_message(bytes(32), me.public_bytes, 0))
        )
        await replay.send_all(frame(encode_hello(stale)) + frame(encode_report(OURS)))
        await collector.wait_for(lambda: collector.rejections["bad_signature"] == 1)
        honest = await _introduce(port, me, worker_id=0)
        await honest.send_all(frame(encode_report(Report(ReportKind.OUR_BATCH, bytes(32), 5))))
        await collector.wait_for(lambda: collector.rejections["wrong_worker"] == 1)
        for stream in (raw, forged, replay, honest):
            await stream.aclose()
        nursery.cancel_scope.cancel()
    assert collector.reports == 0
    assert collector.digests.to_json() == {"ours": {}, "others": {}}

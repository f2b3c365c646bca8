"""Issue 12 items 1, 3, 4, 8, 13 on real sockets: a peer (a forged TCP Hello: the baseline
authenticates nothing) attacks authority 0 of a loaded committee, which keeps reaching
quorum while its buffers and queues stay within their limits."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
import trio

from tests.worker.attacks.support import (
    ATTACK_PARAMS,
    GUARD,
    closed_by_peer,
    connect,
    hello_frame,
    quorum_during,
    request_frame,
    tcp,
    under_load,
    until,
)
from worker.streams import READ_CHUNK, STREAM_ERRORS, read_frame
from worker.wire import messages as wire
from worker.wire.frames import HEADER, Frame, FrameBuffer, Kind

pytestmark = pytest.mark.slow
P = ATTACK_PARAMS


async def test_a_peer_that_never_reads_its_answers_stalls_nothing(tmp_path) -> None:
    """Item 1: answers queue per connection, with a write deadline; in-flight is capped."""
    with trio.fail_after(GUARD):
        async with under_load(tmp_path) as c:
            target = c.authorities[0].worker
            address = target.info()["worker_to_worker"]
            held = 0

            async def never_read() -> None:
                nonlocal held
                blast = b"".join(request_frame(i, b"\x00") for i in range(1, 20_000))
                while True:
                    stream = await connect(address, rcvbuf=1024)
                    held += 1
                    try:
                        await stream.send_all(hello_frame(c.authorities[1].name) + blast)
                        await trio.sleep_forever()
                    except STREAM_ERRORS:
                        stream.socket.close()  # the worker gave up on us: come again

            async with trio.open_nursery() as nursery:
                nursery.start_soon(never_read)
                t = tcp(target)
                await until(
                    lambda: t.watermarks.values["inbound_inflight"] >= P.max_inflight_per_peer
                )
                await quorum_during(target, 20, f"non-reading peer ({held} connections)")
                nursery.cancel_scope.cancel()
            marks = t.watermarks.values
            assert marks["inbound_inflight"] <= P.max_inflight_per_peer
            assert marks["answers_queued"] <= P.max_inflight_per_peer
            print(f"write timeouts: {t.rejections['write_timeout']}, marks: {dict(marks)}")


async def test_announced_frames_cost_only_their_bytes(tmp_path) -> None:
    """Item 3: headers announcing max_message_size, then ~60 bytes, on every connection
    the worker admits; they pin only the bytes sent and end at the frame deadline."""
    with trio.fail_after(GUARD):
        async with under_load(tmp_path) as c:
            target = c.authorities[0].worker
            address = target.info()["worker_to_worker"]
            t = tcp(target)
            streams = []
            for i in range(24):
                stream = await connect(address)
                name = c.authorities[1 + i % 3].name
                announce = HEADER.pack(P.max_message_size + 9, Kind.REQUEST, 1) + bytes(60)
                with contextlib.suppress(*STREAM_ERRORS):  # refused at once: fine
                    await stream.send_all(hello_frame(name) + announce)
                streams.append(stream)
            async with trio.open_nursery() as nursery:
                for stream in streams:
                    nursery.start_soon(closed_by_peer, stream)  # every one ends
                await quorum_during(target, 10, "24 connections announcing 1 MiB frames")
            assert t.rejections["frame_timeout"] + t.rejections["too_many_connections"] >= 24
            # what one read may leave behind a frame; the announced sizes add nothing
            assert t.watermarks.values["inbound_buffer_bytes"] <= READ_CHUNK + 1024


async def test_a_peer_that_accepts_and_never_reads_costs_a_bounded_queue(tmp_path) -> None:
    """Item 4: authority 3 is a listener that never reads; authority 0's requests to it
    fail (write deadline, bounded queue) and quorum goes on with the other two."""
    with trio.fail_after(GUARD):
        async with under_load(tmp_path, start=3) as c:
            host, port = c.committee.worker(c.authorities[3].name, 0).worker_hostport
            listener = trio.socket.socket()
            listener.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_RCVBUF, 1024)
            listener.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            await listener.bind((host, port))
            listener.listen(16)
            target = c.authorities[0].worker
            t = tcp(target)
            await quorum_during(target, 20, "a peer that accepts and never reads")
            await until(lambda: t.rejections["write_timeout"] + t.rejections["queue_full"] > 0)
            assert t.watermarks.values["outbound_queued"] <= P.max_queued_requests
            assert max(t.queued_requests().values()) <= P.max_queued_requests
            print(f"refusals at the sender: {dict(t.rejections)}")
            listener.close()


async def _answers(stream: trio.SocketStream, n: int) -> list[wire.Message]:
    buffer, out = FrameBuffer(1 << 20, tagged=True), []
    while len(out) < n:
        frame = await read_frame(stream, buffer)
        assert isinstance(frame, Frame)
        out.append(wire.decode(frame.payload, 4096))
    return out


async def test_element_bombs_and_non_canonical_batches_are_refused(tmp_path) -> None:
    """Items 8 and 13: a batch of 200k one-byte transactions, empty transactions, float
    and bool tags, and a wider encoding of a valid batch: each refused, none stored."""
    bad = [
        (wire.encode_batch([b"\x01"] * 200_000), "too_many_elements"),
        (wire.encode_batch([b"\x01tx", b""]), "empty_transaction"),
        (msgpack.packb([1, 0.0, [b"\x01tx"]], use_bin_type=True), "unknown_tag"),
        (msgpack.packb([1, False, [b"\x01tx"]], use_bin_type=True), "unknown_tag"),
        (b"\x93\x01\x00\xdc\x00\x01\xc4\x03\x01tx", "non_canonical"),
    ]
    with trio.fail_after(GUARD):
        async with under_load(tmp_path) as c:
            target = c.authorities[0].worker
            stream = await connect(target.info()["worker_to_worker"])
            await stream.send_all(hello_frame(c.authorities[1].name))
            rounds = 0
            first_round = trio.Event()

            async def attack() -> None:
                nonlocal rounds
                while True:
                    await stream.send_all(
                        b"".join(request_frame(i + 1, d) for i, (d, _) in enumerate(bad))
                    )
                    answers = await _answers(stream, len(bad))
                    expected = [wire.Reject(reason) for _, reason in bad]
                    assert sorted(answers, key=repr) == sorted(expected, key=repr)  # any order
                    rounds += 1
                    first_round.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(attack)
                await first_round.wait()
                await quorum_during(target, 20, "element bombs and non-canonical batches")
                nursery.cancel_scope.cancel()
            stored = target.stored_digests()
            assert not any(wire.digest(d).hex() in stored for d, _ in bad)
            for _, reason in bad:
                assert target.processor.rejections[reason] >= rounds
            print(f"{rounds} rounds of {len(bad)} refused batches")

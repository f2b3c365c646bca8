"""Issue 12 item 14 under load: strangers and other authorities connect to authority 0's
primary and report digests; none becomes evidence, and the real worker's reports do."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from tests.worker.attacks.support import GUARD, quorum_during, under_load
from worker.keys import KeyPair
from worker.streams import STREAM_ERRORS, read_frame
from worker.wire.frames import FrameBuffer, frame
from worker.wire.reports import (
    PrimaryHello,
    Report,
    ReportKind,
    encode_hello,
    encode_report,
    hello_message,
)

pytestmark = pytest.mark.slow


async def _forge(address: str, keypair: KeyPair, digests: list[bytes]) -> None:
    host, _, port = address.rpartition(":")
    try:
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            nonce = await read_frame(stream, FrameBuffer(64))
            assert isinstance(nonce, bytes)
            me = keypair.public_bytes
            hello = PrimaryHello(me, 0, keypair.sign(hello_message(nonce, me, 0)))
            reports = [Report(ReportKind.OUR_BATCH, d, 0) for d in digests]
            await stream.send_all(
                frame(encode_hello(hello)) + b"".join(frame(encode_report(r)) for r in reports)
            )
            await stream.receive_some(64)  # the collector hangs up
    except STREAM_ERRORS:
        pass


async def test_only_the_authoritys_workers_report(tmp_path: Path) -> None:
    with trio.fail_after(GUARD):
        async with under_load(tmp_path) as c:
            target = c.authorities[0]
            address = c.committee.authorities[target.name].primary.worker_to_primary
            forged = [os.urandom(32) for _ in range(50)]
            impostors = [KeyPair.generate(), c.keys[1]]  # a stranger, another authority
            rounds = 0

            async def attack() -> None:
                nonlocal rounds
                while True:
                    for keypair in impostors:
                        await _forge(address, keypair, forged)
                    rounds += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(attack)
                await quorum_during(target.worker, 20, "forged reports at the primary")
                await target.collector.wait_for(
                    lambda: target.collector.rejections["unknown_authority"] >= 2
                )
                nursery.cancel_scope.cancel()
            ours = target.collector.digests.ours.get(0, set())
            assert not set(forged) & ours
            assert not set(forged) & target.collector.digests.others.get(0, set())
            await target.collector.wait_for(
                lambda: (
                    {bytes.fromhex(r.digest) for r in target.worker.records}
                    <= target.collector.digests.ours.get(0, set())
                )
            )
            print(f"{rounds} rounds of forged reports refused")

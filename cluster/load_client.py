"""Rate-controlled load client, as the original benchmark client.

Sends in 20 bursts a second; the first transaction of each burst is a *sample*
(`0x00 || u64 counter`, padded) whose send time is recorded for end-to-end latency;
the others start with `0x01`. A burst that overruns its 50 ms slot is counted as a
missed target and warned about.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import sys
import time
from array import array
from dataclasses import dataclass, field

import trio

log = logging.getLogger(__name__)

PRECISION = 20  # bursts per second
BURST_DURATION = 1 / PRECISION
_HEADER = struct.Struct(">IBQ")  # frame length, tx kind, counter
_STAMP = struct.Struct(">Q")  # sample send time, ns since the epoch (inside the padding)


@dataclass
class ClientReport:
    target: str
    rate: int
    tx_size: int
    sent: int = 0
    missed_bursts: int = 0
    reconnects: int = 0
    started_at: float = 0.0
    ended_at: float = 0.0
    samples: dict[int, float] = field(default_factory=dict)  # counter -> wall send time

    def to_json(self) -> dict[str, object]:
        return {
            "target": self.target,
            "rate": self.rate,
            "tx_size": self.tx_size,
            "sent": self.sent,
            "missed_bursts": self.missed_bursts,
            "reconnects": self.reconnects,
            "started_at": self.started_at,
            "ended_at": self.ended_at,
            "samples": {str(k): v for k, v in self.samples.items()},
        }


class BurstBuilder:
    """One reusable buffer per burst; only the sample and the counters change, and the
    counters are written with slice operations (no Python work per transaction)."""

    def __init__(self, burst: int, tx_size: int) -> None:
        if tx_size < 9:
            raise ValueError("transaction size must be at least 9 bytes")
        self.burst, self.tx_size = burst, tx_size
        self._step = 4 + tx_size
        self._buf = bytearray(self._step * burst)
        for i in range(1, burst):  # once: every frame's length and kind
            _HEADER.pack_into(self._buf, i * self._step, tx_size, 1, 0)
        self._counter = 0

    def build(self, sample_id: int, sent_ns: int = 0, count: int | None = None) -> bytes:
        """`count` transactions (default: a whole burst), the first one the sample."""
        count = self.burst if count is None else min(count, self.burst)
        step, buf = self._step, self._buf
        _HEADER.pack_into(buf, 0, self.tx_size, 0, sample_id)
        if self.tx_size >= 17:
            _STAMP.pack_into(buf, 4 + 9, sent_ns)
        if count > 1:
            first = self._counter + 1
            self._counter += count - 1
            counters = array("Q", range(first, first + count - 1))
            if sys.byteorder == "little":
                counters.byteswap()  # big-endian, as the header says
            raw = counters.tobytes()
            end = count * step
            for k in range(8):  # byte k of every counter, at its place in every frame
                buf[step + 5 + k : end : step] = raw[k::8]
        with memoryview(buf) as view:  # one copy (a slice of the bytearray would be two)
            return bytes(view[: count * step])


def burst_sizes(rate: int, index: int) -> int:
    """Transactions in burst `index`: spread so every second sends exactly `rate`."""
    return (index + 1) * rate // PRECISION - index * rate // PRECISION


async def _connect(host: str, port: int) -> trio.SocketStream:
    """Dial until the worker listens (it may still be starting); the caller bounds it."""
    delay = 0.02
    while True:
        try:
            return await trio.open_tcp_stream(host, port)
        except OSError:
            await trio.sleep(delay)
            delay = min(delay * 2, 0.5)


async def run_load_client(
    address: str, rate: int, tx_size: int, duration: float, connect_timeout: float = 5.0
) -> ClientReport:
    """Send `rate` tx/s of `tx_size` bytes to a worker's transactions address for `duration` s."""
    host, _, port = address.rpartition(":")
    burst = max(1, -(-rate // PRECISION))
    report = ClientReport(address, rate, tx_size)
    builder = BurstBuilder(burst, tx_size)
    # A worker down at the start (a crash planned at 0 s) is the same as one lost later:
    # the schedule starts anyway and every burst redials, so no client holds the run.
    stream: trio.SocketStream | None = None
    with trio.move_on_after(connect_timeout):
        stream = await _connect(host, int(port))
    if stream is None:
        log.warning(
            "client %s: no worker there after %g s; redialing per burst", address, connect_timeout
        )
    report.started_at = time.time()
    start = trio.current_time()
    slot = start
    sample = 0
    try:
        while slot - start < duration:
            if stream is None:  # the worker crashed: keep the schedule, redial per burst
                with trio.move_on_at(slot + BURST_DURATION):
                    with contextlib.suppress(OSError):
                        stream = await trio.open_tcp_stream(host, int(port))
                        report.reconnects += 1
            count = burst_sizes(rate, sample)
            if stream is not None and count:
                sent_ns = time.time_ns()
                payload = builder.build(sample, sent_ns, count)
                try:
                    await stream.send_all(payload)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    log.warning("client %s lost its worker; reconnecting", address)
                    await stream.aclose()
                    stream = None
                else:
                    report.samples[sample] = sent_ns / 1e9
                    report.sent += count
            sample += 1
            slot += BURST_DURATION
            now = trio.current_time()
            if now > slot:
                report.missed_bursts += 1
                if report.missed_bursts in (1, 10, 100) or report.missed_bursts % 1000 == 0:
                    log.warning(
                        "client %s missed its target rate (%d bursts late so far)",
                        address,
                        report.missed_bursts,
                    )
            await trio.sleep_until(slot)
    finally:
        if stream is not None:
            await stream.aclose()
    report.ended_at = time.time()
    return report

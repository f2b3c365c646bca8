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
import time
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
    """One reusable buffer per burst; only the kind byte and counters change."""

    def __init__(self, burst: int, tx_size: int) -> None:
        if tx_size < 9:
            raise ValueError("transaction size must be at least 9 bytes")
        self.burst, self.tx_size = burst, tx_size
        self._buf = bytearray((4 + tx_size) * burst)
        self._counter = 0

    def build(self, sample_id: int, sent_ns: int = 0, count: int | None = None) -> bytes:
        """`count` transactions (default: a whole burst), the first one the sample."""
        count = self.burst if count is None else min(count, self.burst)
        step, buf = 4 + self.tx_size, self._buf
        _HEADER.pack_into(buf, 0, self.tx_size, 0, sample_id)
        if self.tx_size >= 17:
            _STAMP.pack_into(buf, 4 + 9, sent_ns)
        for i in range(1, count):
            self._counter += 1
            _HEADER.pack_into(buf, i * step, self.tx_size, 1, self._counter)
        return bytes(buf[: count * step])


def burst_sizes(rate: int, index: int) -> int:
    """Transactions in burst `index`: spread so every second sends exactly `rate`."""
    return (index + 1) * rate // PRECISION - index * rate // PRECISION


async def _connect(host: str, port: int, timeout: float) -> trio.SocketStream:
    with trio.fail_after(timeout):
        delay = 0.02
        while True:
            try:
                return await trio.open_tcp_stream(host, port)
            except OSError:
                await trio.sleep(delay)
                delay = min(delay * 2, 0.5)


async def run_load_client(
    address: str, rate: int, tx_size: int, duration: float, connect_timeout: float = 30.0
) -> ClientReport:
    """Send `rate` tx/s of `tx_size` bytes to a worker's transactions address for `duration` s."""
    host, _, port = address.rpartition(":")
    burst = max(1, -(-rate // PRECISION))
    report = ClientReport(address, rate, tx_size)
    builder = BurstBuilder(burst, tx_size)
    stream: trio.SocketStream | None = await _connect(host, int(port), connect_timeout)
    report.started_at = time.time()
    start = trio.current_time()
    slot = start
    sample = 0
    try:
        while slot - start < duration:
            if stream is None:  # the worker crashed: keep the schedule, redial per burst
                with trio.move_on_at(slot):
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

"""The load client sends exactly its rate, whatever the rate's remainder per burst, and
redials a worker it lost."""

from __future__ import annotations

import pytest
import trio

from cluster.load_client import PRECISION, BurstBuilder, ClientReport, burst_sizes, run_load_client


@pytest.mark.parametrize("rate", [1, 7, 50, 250, 1_001, 20_000])
def test_every_second_sends_exactly_the_rate(rate: int) -> None:
    for second in range(3):
        bursts = range(second * PRECISION, (second + 1) * PRECISION)
        assert sum(burst_sizes(rate, i) for i in bursts) == rate


def test_a_short_burst_keeps_its_sample_first() -> None:
    builder = BurstBuilder(burst=13, tx_size=32)
    payload = builder.build(sample_id=5, count=12)
    assert len(payload) == 12 * (4 + 32)
    assert payload[4] == 0  # the sample's kind byte
    assert all(payload[i * 36 + 4] == 1 for i in range(1, 12))


def test_a_client_redials_its_worker_after_losing_it() -> None:
    """A crashed worker's listener that comes back gets its client's load again."""
    received: list[int] = []

    async def main() -> ClientReport:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        accepted = 0

        async def serve(stream: trio.SocketStream) -> None:
            nonlocal accepted
            accepted += 1
            first = accepted == 1
            async with stream:
                while data := await stream.receive_some(65536):
                    received.append(len(data))
                    if first:  # the "crash": drop the first connection at its first bytes
                        return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, serve, listeners)
            report = await run_load_client(f"127.0.0.1:{port}", 200, 64, duration=2.0)
            nursery.cancel_scope.cancel()
        return report

    report = trio.run(main)
    assert report.reconnects >= 1
    assert len(received) >= 2

"""Transport benchmark: TCP baseline vs libp2p, through the same Transport interface.

A server process answers every request at once with a 36-byte ack; the client (this
process) sends 500 KB and 1 KB requests, sequentially (one in flight) and concurrently
(a window of requests in flight). Prints MB/s, req/s, p50/p99 latency per case and the
libp2p/TCP ratio.

    python bench/transport.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

import trio

from cluster.committee import make_local_committee
from faults.series import percentile
from worker.config import Committee, Parameters
from worker.keys import KeyPair
from worker.transport.base import RequestReceived, ResponseReceived, SendRequest, Transport
from worker.transport.factory import libp2p_key_dir, make_transport

ACK = bytes(36)
CASES = [  # (label, payload bytes, requests, window)
    ("500 KB sequential", 500_000, 200, 1),
    ("500 KB concurrent", 500_000, 600, 8),
    ("1 KB sequential", 1_000, 3_000, 1),
    ("1 KB concurrent", 1_000, 20_000, 64),
]


def _transport(committee: Committee, key: KeyPair, params: Parameters, root: Path) -> Transport:
    return make_transport(committee, key.name, 0, params, key, libp2p_key_dir(root / key.name[:6]))


def _server(committee_json: str, params_json: str, seed: bytes, root: str, conn: Connection):
    committee = Committee.model_validate_json(committee_json)
    params = Parameters.model_validate_json(params_json)
    key = KeyPair.generate(seed)

    async def main() -> None:
        transport = _transport(committee, key, params, Path(root))
        async with trio.open_nursery() as nursery:
            address = await nursery.start(transport.serve)
            conn.send(address)
            async for event in transport.events:
                if isinstance(event, RequestReceived):
                    await event.respond(ACK)

    trio.run(main)


async def _client(transport: Transport, peer: str, payload: bytes, count: int, window: int):
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    slots = trio.Semaphore(window)

    async def sender() -> None:
        for rid in range(1, count + 1):
            await slots.acquire()
            sent_at[rid] = time.perf_counter()
            transport.send(SendRequest(rid, peer, payload))

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender)
        while len(latencies) < count:
            event = await transport.events.receive()
            if not isinstance(event, ResponseReceived):
                raise RuntimeError(f"benchmark request failed: {event}")
            latencies.append(time.perf_counter() - sent_at.pop(event.request_id))
            slots.release()
    elapsed = time.perf_counter() - start
    return {
        "mb_s": round(count * len(payload) / elapsed / 1e6, 1),
        "req_s": round(count / elapsed),
        "p50_ms": round(percentile(latencies, 50) * 1e3, 2),
        "p99_ms": round(percentile(latencies, 99) * 1e3, 2),
    }


def run_transport(name: str, quick: bool) -> dict[str, dict[str, float]]:
    params = Parameters(transport=name)
    committee, keys = make_local_committee(2, 1)
    client_key, server_key = keys
    root = Path(tempfile.mkdtemp(prefix="bench-transport-"))
    parent, child = mp.get_context("spawn").Pipe()
    server = mp.get_context("spawn").Process(
        target=_server,
        args=(
            committee.model_dump_json(),
            params.model_dump_json(),
            server_key.seed,
            str(root),
            child,
        ),
        daemon=True,
    )
    server.start()
    try:
        if not parent.poll(60):
            raise RuntimeError("server did not start")
        server_address = parent.recv()

        async def main() -> dict[str, dict[str, float]]:
            transport = _transport(committee, client_key, params, root)
            out = {}
            async with trio.open_nursery() as nursery:
                await nursery.start(transport.serve)
                transport.add_peer_addrs({server_key.name: server_address})
                with trio.fail_after(30):
                    await transport.wait_discovery({server_key.name})
                for label, size, count, window in CASES:
                    count = max(window * 4, count // 10) if quick else count
                    payload = bytes(size)
                    await _client(transport, server_key.name, payload, window * 2, window)
                    out[label] = await _client(transport, server_key.name, payload, count, window)
                nursery.cancel_scope.cancel()
            return out

        return trio.run(main)
    finally:
        server.terminate()
        server.join(10)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a tenth of the requests")
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args(argv)
    results = {name: run_transport(name, args.quick) for name in ("tcp", "libp2p")}
    print(f"{'case':<20} {'transport':<8} {'MB/s':>8} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for label, *_ in CASES:
        for name in ("tcp", "libp2p"):
            r = results[name][label]
            figures = f"{r['mb_s']:>8} {r['req_s']:>8} {r['p50_ms']:>8} {r['p99_ms']:>8}"
            print(f"{label:<20} {name:<8} {figures}")
        ratio = results["libp2p"][label]["req_s"] / results["tcp"][label]["req_s"]
        print(f"{'':<20} libp2p/tcp throughput ratio: {ratio:.2f}")
        results.setdefault("ratio", {})[label] = round(ratio, 3)  # type: ignore[index]
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

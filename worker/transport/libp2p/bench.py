"""Loopback benchmark: `libp2p.request_response` against the transport's pipelined stream.

    python -m worker.transport.libp2p.bench [--seconds 4]

Client and server run in separate processes (the server is a child). Figures count
request payload bytes only; answers are a few bytes. Used for docs/libp2p-protocol.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import trio
from libp2p.custom_types import TProtocol
from libp2p.peer.peerinfo import PeerInfo
from libp2p.request_response import BytesCodec, RequestResponse, RequestResponseConfig

from worker.config import Committee, Parameters
from worker.keys import KeyPair
from worker.transport.base import RequestFailed, RequestReceived, ResponseReceived, SendRequest
from worker.transport.libp2p.host import (
    build_host,
    dialable_addr,
    listen_addr,
    load_or_create_identity,
    parse_peer_addr,
)
from worker.transport.libp2p.transport import Libp2pTransport

RR_PROTOCOL = TProtocol("/narwhal/bench/rr/1.0.0")
SIZES = {"500KB": 500_000, "1KB": 1_000}
WINDOW = {"500KB": 8, "1KB": 64}  # requests in flight when pipelining
MiB = 1e6


def _keys() -> list[KeyPair]:
    return [KeyPair.generate(bytes([i + 1]) * 32) for i in range(2)]


def _committee(keys: list[KeyPair]) -> Committee:
    authorities = {
        k.name: {
            "stake": 1,
            "primary": {"worker_to_primary": f"127.0.0.1:{7000 + i}"},
            "workers": {
                0: {
                    "transactions": f"127.0.0.1:{7100 + i}",
                    "worker_to_worker": f"127.0.0.1:{7200 + i}",
                }
            },
        }
        for i, k in enumerate(keys)
    }
    return Committee.model_validate({"authorities": authorities})


# -- server side (child process) ---------------------------------------------------------
async def _serve(mode: str, key_dir: Path) -> None:
    if mode == "rr":
        host = build_host(load_or_create_identity(key_dir))
        rr = RequestResponse(host)

        async def handler(request: bytes, _ctx: object) -> bytes:
            return b"ok"

        config = RequestResponseConfig(max_request_size=16 * 2**20, max_concurrent_inbound=1024)
        rr.set_handler(RR_PROTOCOL, handler, BytesCodec(), config)
        async with host.run([listen_addr("127.0.0.1")]):
            print(dialable_addr(host), flush=True)
            await trio.sleep_forever()
    keys = _keys()
    params = Parameters(max_message_size=17 * 2**20)
    transport = Libp2pTransport(_committee(keys), keys[0].name, 0, params, keys[0], key_dir)
    async with trio.open_nursery() as nursery:
        print(await nursery.start(transport.serve), flush=True)
        async for event in transport.events:
            if isinstance(event, RequestReceived):
                await event.respond(b"ok")


# -- client side --------------------------------------------------------------------------
async def _closed_loop(
    request: object, size: int, window: int, seconds: float
) -> tuple[float, float]:
    """(payload MB/s, req/s) with `window` concurrent senders, each one at a time."""
    done = 0
    deadline = trio.current_time() + seconds

    async def sender() -> None:
        nonlocal done
        while trio.current_time() < deadline:
            await request()  # type: ignore[operator]
            done += 1

    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        for _ in range(window):
            nursery.start_soon(sender)
    elapsed = trio.current_time() - start
    return done * size / elapsed / MiB, done / elapsed


async def _latency(request: object, n: int) -> float:
    samples = []
    for _ in range(n):
        start = trio.current_time()
        await request()  # type: ignore[operator]
        samples.append(trio.current_time() - start)
    return statistics.median(samples) * 1000


async def _bench_rr(addr: str, key_dir: Path, seconds: float) -> dict[str, object]:
    host = build_host(load_or_create_identity(key_dir))
    rr = RequestResponse(host)
    peer_id, maddr = parse_peer_addr(addr)
    config = RequestResponseConfig(timeout=30, max_request_size=16 * 2**20)
    out: dict[str, object] = {}
    async with host.run([listen_addr("127.0.0.1")]):
        await host.connect(PeerInfo(peer_id, [maddr]))
        for label, size in SIZES.items():
            payload = b"x" * size

            async def request(payload: bytes = payload) -> None:
                await rr.send_request(peer_id, [RR_PROTOCOL], payload, BytesCodec(), config)

            mbs, rps = await _closed_loop(request, size, WINDOW[label], seconds)
            out[label] = {
                "MB/s": round(mbs, 1),
                "req/s": round(rps),
                "p50_ms": round(await _latency(request, 50), 2),
            }
        for size in (4_000_000, 16_000_000):
            try:
                await rr.send_request(peer_id, [RR_PROTOCOL], b"x" * size, BytesCodec(), config)
                out[f"{size // 1_000_000}MB"] = "ok"
            except Exception as exc:
                out[f"{size // 1_000_000}MB"] = f"failed: {type(exc).__name__}"
        await host.close()
    return out


async def _bench_stream(addr: str, key_dir: Path, seconds: float) -> dict[str, object]:
    keys = _keys()
    params = Parameters(max_message_size=17 * 2**20)
    client = Libp2pTransport(
        _committee(keys), keys[1].name, 0, params, keys[1], key_dir, peer_addrs={keys[0].name: addr}
    )
    target = keys[0].name
    out: dict[str, object] = {}
    waiting: dict[int, trio.Event] = {}
    failures: list[object] = []
    next_id = 0

    async def route() -> None:
        async for event in client.events:
            if isinstance(event, ResponseReceived):
                waiting.pop(event.request_id).set()
            elif isinstance(event, RequestFailed):
                failures.append(event)
                waiting.pop(event.request_id, trio.Event()).set()
            else:
                failures.append(event)

    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        nursery.start_soon(route)
        await client.wait_discovery({target})
        for label, size in {**SIZES, "4MB": 4_000_000, "16MB": 16_000_000}.items():
            payload = b"x" * size

            async def request(payload: bytes = payload) -> None:
                nonlocal next_id
                next_id += 1
                done = waiting[next_id] = trio.Event()
                client.send(SendRequest(next_id, target, payload))
                await done.wait()

            if label in SIZES:
                mbs, rps = await _closed_loop(request, size, WINDOW[label], seconds)
                out[label] = {
                    "MB/s": round(mbs, 1),
                    "req/s": round(rps),
                    "p50_ms": round(await _latency(request, 50), 2),
                }
            else:
                before = len(failures)
                await request()
                out[label] = "ok" if len(failures) == before else f"failed: {failures[-1]}"
        nursery.cancel_scope.cancel()
    return out


async def _client(mode: str, addr: str, seconds: float) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "rr":
            return await _bench_rr(addr, Path(tmp), seconds)
        return await _bench_stream(addr, Path(tmp), seconds)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--serve", choices=["rr", "stream"])
    parser.add_argument("--key-dir", type=Path)
    args = parser.parse_args()
    if args.serve:
        trio.run(_serve, args.serve, args.key_dir)
        return
    results = {}
    for mode in ("rr", "stream"):
        with tempfile.TemporaryDirectory() as key_dir:
            server = subprocess.Popen(
                [sys.executable, "-m", __spec__.name, "--serve", mode, "--key-dir", key_dir],
                stdout=subprocess.PIPE,
                text=True,
            )
            try:
                assert server.stdout is not None
                addr = server.stdout.readline().strip()
                results[mode] = trio.run(_client, mode, addr, args.seconds)
            finally:
                server.terminate()
                server.wait()
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

"""An acked batch survives a SIGKILL of the receiver right after its ack (durability).

A SIGKILL keeps the page cache, so this cannot see the *ordering* (persist, then ack):
tests/worker/attacks/test_store_ordering.py does, with a store that blocks."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import trio

from cluster.committee import make_local_committee
from worker.config import Parameters, save_model
from worker.store import BatchStore
from worker.transport.base import ResponseReceived, SendRequest
from worker.transport.tcp import TcpTransport
from worker.wire import messages as wire


async def _read_line(proc: trio.Process) -> bytes:
    assert proc.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await proc.stdout.receive_some(1)
        if not chunk:
            raise RuntimeError("receiver exited before it was ready")
        line += chunk
    return line


async def test_batch_is_on_disk_when_acked(tmp_path: Path) -> None:
    committee, keys = make_local_committee(4, 1)
    sender, receiver = keys[0], keys[1]
    save_model(committee, tmp_path / "committee.json")
    save_model(Parameters(transport="tcp"), tmp_path / "parameters.json")
    receiver.save(tmp_path / "receiver.json")
    store_dir = tmp_path / "store"
    options = {
        "--committee": tmp_path / "committee.json",
        "--keys": tmp_path / "receiver.json",
        "--store": store_dir,
        "--parameters": tmp_path / "parameters.json",
    }
    cmd = [sys.executable, "-m", "cluster.cli", "authority"]
    cmd += [str(part) for option in options.items() for part in option]
    proc = await trio.lowlevel.open_process(cmd, stdout=subprocess.PIPE)
    try:
        with trio.fail_after(60):
            info = json.loads(await _read_line(proc))
        assert info["authority"] == receiver.name
        transport = TcpTransport(committee, sender.name, 0, Parameters(transport="tcp"))
        data = wire.encode_batch([b"\x01" + bytes(100) for _ in range(50)])
        async with trio.open_nursery() as nursery:
            await nursery.start(transport.serve)
            transport.send(SendRequest(1, receiver.name, data))
            with trio.fail_after(60):
                event = await transport.events.receive()
            proc.send_signal(signal.SIGKILL)  # right after the ack, no clean shutdown
            nursery.cancel_scope.cancel()
        assert isinstance(event, ResponseReceived)
        assert wire.decode(event.data, 1024) == wire.Ack(wire.digest(data))
        with trio.fail_after(30):
            await proc.wait()
        assert proc.returncode == -signal.SIGKILL
        store = BatchStore(store_dir / "worker-0")
        try:
            assert store.get(wire.digest(data)) == data
        finally:
            store.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

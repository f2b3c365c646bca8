"""A real lab on this box: up/status/down, kernel partitions and loss, machine crash/restart."""

from __future__ import annotations

import subprocess
import time

import pytest

from cluster.lab import commands, lab, machine, network, status
from cluster.lab.faults import KernelFaults
from cluster.lab.state import LabState
from tests.cluster.lab.conftest import PREFIX, MakeLab, leftovers

pytestmark = pytest.mark.slow

SERVER = """
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
while True:
    s.accept()[0].close()
"""

PROBE = """
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])).close()
    print("ok")
except TimeoutError:
    print("timeout")
except ConnectionRefusedError:
    print("refused")
"""

OPEN_PORT, CLOSED_PORT = 7000, 7001


def probe(state: LabState, src: str, dst: str, port: int, timeout: float = 1.5) -> str:
    """What a TCP connect from machine src to machine dst:port meets: ok, timeout or refused."""
    python = str(state.plan.python_bin / "python")
    address = state.plan.machine(dst).address
    argv = [python, "-c", PROBE, address, str(port), str(timeout)]
    return machine.run_in(state, src, argv, timeout=30).strip()


def alive_nodes(state: LabState) -> dict[str, str]:
    """Ray's alive nodes: id -> ip."""
    return {n["id"]: n["ip"] for n in status.ray_nodes(state) if n["alive"]}


def wait_for(condition, what: str, timeout: float = 60.0):  # type: ignore[no-untyped-def]
    """Poll an external system (Ray's node table) until `condition()` is truthy."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.5)
    return result


def test_up_status_down(make_lab: MakeLab) -> None:
    state = make_lab(2)
    info = status.status(state)
    assert [row["machine"] for row in info["machines"]] == ["m0", "m1"]
    assert all(row["running"] and row["sshd"] and row["ray"] for row in info["machines"])
    ips = sorted(n["ip"] for n in info["ray_nodes"])
    assert ips == sorted(m.address for m in state.plan.machines)
    assert len(set(ips)) == 2
    assert info["head_address"] == f"{state.plan.machines[0].address}:6379"

    removed = lab.down(state.plan.state_dir, prefix=PREFIX)
    assert any(item.startswith("netns:") for item in removed)
    assert not leftovers(state.plan.state_dir)
    assert lab.down(state.plan.state_dir, prefix=PREFIX) == []  # idempotent


def test_down_after_a_crashed_up_finds_the_lab_by_name(make_lab: MakeLab) -> None:
    state = make_lab(1, ray=False)
    state.plan.state_file.unlink()  # as if `up` died before writing it
    lab.down(state.plan.state_dir, prefix=PREFIX)
    assert not network.lab_namespaces(PREFIX) and not network.lab_links(PREFIX)


def test_partition_drops_packets_in_the_kernel_and_heals(make_lab: MakeLab) -> None:
    state = make_lab(3, ray=False)
    server_argv = [
        str(state.plan.python_bin / "python"),
        "-c",
        SERVER,
        state.plan.machine("m1").address,
        str(OPEN_PORT),
    ]
    server = subprocess.Popen(
        commands.in_machine(state.init_pid("m1"), server_argv),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    faults = KernelFaults(state)
    try:
        wait_for(lambda: probe(state, "m0", "m1", OPEN_PORT) == "ok", "the server in m1")
        assert probe(state, "m0", "m1", CLOSED_PORT) == "refused"

        faults.partition(["m0"], ["m1"])
        # SYNs vanish: a closed port times out too, so nothing answers at all.
        assert probe(state, "m0", "m1", OPEN_PORT) == "timeout"
        assert probe(state, "m0", "m1", CLOSED_PORT) == "timeout"
        assert probe(state, "m2", "m1", OPEN_PORT) == "ok"  # only m0 is cut from m1

        faults.heal()
        assert probe(state, "m0", "m1", OPEN_PORT) == "ok"
        assert probe(state, "m0", "m1", CLOSED_PORT) == "refused"

        faults.loss("m1", 1.0)
        assert probe(state, "m0", "m1", OPEN_PORT) == "timeout"
        faults.loss("m1", 0.0)
        assert probe(state, "m0", "m1", OPEN_PORT) == "ok"

        faults.cap_bandwidth("m1", 1_000_000)
        qdisc = subprocess.run(
            ["ip", "netns", "exec", state.plan.machine("m1").netns, "tc", "qdisc", "show"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
        assert "tbf" in qdisc
        assert probe(state, "m0", "m1", OPEN_PORT) == "ok"
        faults.clear()
    finally:
        server.kill()
        server.wait(timeout=10)


def test_crash_kills_a_whole_machine_and_restart_brings_its_node_back(make_lab: MakeLab) -> None:
    state = make_lab(2)
    m1 = state.plan.machine("m1")
    before = alive_nodes(state)
    (old_m1,) = [node for node, ip in before.items() if ip == m1.address]
    assert "raylet" in machine.process_names(m1)

    KernelFaults(state).crash("m1")
    assert network.namespace_pids(m1.netns) == []
    assert "raylet" in machine.process_names(state.plan.machine("m0"))
    rows = {row["machine"]: row for row in status.machines(state)}
    assert not rows["m1"]["running"] and not rows["m1"]["sshd"] and not rows["m1"]["ray"]
    assert rows["m0"]["ray"]

    KernelFaults(state).restart("m1")
    assert "raylet" in machine.process_names(m1) and "sshd" in machine.process_names(m1)
    nodes = wait_for(
        lambda: {n: ip for n, ip in alive_nodes(state).items() if ip == m1.address and n != old_m1},
        "m1's new Ray node",
    )
    assert len(nodes) == 1

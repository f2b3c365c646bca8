"""The lab's network in the kernel: create it from a plan, find and remove it by name prefix.

Removal works from names alone (`<prefix>-*` namespaces, `<prefix>*` links) so that `lab
down` cleans up after a `lab up` that crashed before writing its state file. Nothing outside
those names is touched: the root namespace keeps its interfaces, routes and firewall.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal

from cluster.lab import commands, shell
from cluster.lab.plan import Machine
from cluster.lab.state import LabState


def create(state: LabState) -> None:
    """Bridge and every machine's namespace, recording each in the state as it is made."""
    plan = state.plan
    for argv in commands.bridge_up(plan):
        shell.run(argv)
    state.note(f"bridge:{plan.bridge}")
    for m in plan.machines:
        state.note(f"netns:{m.netns}")
        for argv in commands.machine_network_up(plan, m):
            shell.run(argv)


def lab_namespaces(prefix: str) -> list[str]:
    """Network namespaces named like the lab's (`<prefix>-m<i>`)."""
    out = shell.run(["ip", "-j", "netns", "list"], check=False).stdout.strip()
    names = [entry["name"] for entry in json.loads(out)] if out else []
    return [name for name in names if name.startswith(f"{prefix}-")]


def lab_links(prefix: str) -> list[str]:
    """Root-namespace links named like the lab's (the bridge and veth host ends)."""
    out = shell.run(["ip", "-j", "link", "show"], check=False).stdout.strip()
    names = [entry["ifname"] for entry in json.loads(out)] if out else []
    return [name for name in names if name.startswith(prefix)]


def namespace_pids(netns: str) -> list[int]:
    """Every process living in a network namespace (the machine's init and all it runs)."""
    done = shell.run(["ip", "netns", "pids", netns], check=False)
    return [int(p) for p in done.stdout.split() if p.strip().isdigit()]


def kill_namespace_processes(netns: str, timeout: float = 10.0) -> None:
    """SIGKILL everything in the namespace and wait until it is empty."""

    def empty() -> bool:
        pids = namespace_pids(netns)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return not pids

    shell.wait_until(empty, timeout=timeout, what=f"the processes of {netns} to exit")


def destroy(prefix: str) -> list[str]:
    """Remove every lab namespace (processes first) and link with this prefix; what went."""
    removed: list[str] = []
    for netns in lab_namespaces(prefix):
        kill_namespace_processes(netns)
        if shell.try_run(["ip", "netns", "del", netns]):
            removed.append(f"netns:{netns}")
    for link in lab_links(prefix):
        if shell.try_run(["ip", "link", "del", link]):
            removed.append(f"link:{link}")
    return removed


def interface_counters(m: Machine) -> dict[str, int]:
    """Bytes through a machine's veth as the bridge sees it (to show traffic crossed it)."""
    out = shell.run(["ip", "-j", "-s", "link", "show", m.veth_host]).stdout
    stats = json.loads(out)[0]["stats64"]
    return {"rx_bytes": stats["rx"]["bytes"], "tx_bytes": stats["tx"]["bytes"]}

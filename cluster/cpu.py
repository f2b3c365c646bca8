"""How much CPU a run used: the whole machine's share, and the run's own processes.

Read from /proc (Linux) so it needs no extra package and costs one pass over /proc per
mark. The machine's share is busy / all jiffies of /proc/stat between two marks, over
all cores. The run's own CPU is summed over the driver's process tree (the driver, the
local backend's authority processes, an embedded Ray's raylet and actor processes, which
it starts as descendants): per process its own plus its reaped children's CPU time, so a
process that ended between two marks still counts if an ancestor in the tree reaped it.
Actors on other machines of a Ray cluster are not on this machine's /proc: `scope` says
the figure covers this machine only. Without /proc every figure is None.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROC = Path("/proc")
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass(frozen=True)
class Snapshot:
    at: float
    #: /proc/stat's aggregate line: (busy, total) jiffies; None without /proc
    machine: tuple[int, int] | None
    #: pid -> CPU seconds (self + reaped children) of every process of the tree
    tree: dict[int, float] = field(default_factory=dict)


def machine_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all cores since boot; idle and iowait are not busy."""
    try:
        first = (PROC / "stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    values = [int(v) for v in first[1:]]
    # user nice system idle iowait irq softirq steal (guest and guest_nice are in user)
    total = sum(values[:8])
    return total - values[3] - values[4], total


def _stat(pid: int) -> tuple[int, float] | None:
    """(parent pid, CPU seconds of the process and its reaped children)."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return int(fields[1]), (utime + stime + cutime + cstime) / _TICK


def process_tree(root: int | None = None) -> dict[int, float]:
    """pid -> CPU seconds of `root` (default: this process) and all its descendants."""
    root = os.getpid() if root is None else root
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    with contextlib.suppress(OSError):
        for entry in PROC.iterdir():
            if entry.name.isdigit() and (got := _stat(int(entry.name))) is not None:
                parents[int(entry.name)], cpu[int(entry.name)] = got
    children: dict[int, list[int]] = {}
    for pid, parent in parents.items():
        children.setdefault(parent, []).append(pid)
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in cpu:
            tree[pid] = cpu[pid]
            todo += children.get(pid, [])
    return tree


def snapshot() -> Snapshot:
    return Snapshot(time.monotonic(), machine_jiffies(), process_tree())


def cpu_between(a: Snapshot, b: Snapshot) -> dict[str, Any]:
    """The machine's share and the run's CPU-seconds from `a` to `b`."""
    cores = os.cpu_count() or 1
    window = b.at - a.at
    share = None
    if a.machine is not None and b.machine is not None:
        total = b.machine[1] - a.machine[1]
        share = round((b.machine[0] - a.machine[0]) / total, 3) if total > 0 else 0.0
    run_cpu = None
    if a.tree or b.tree:
        run_cpu = round(max(0.0, sum(b.tree.values()) - sum(a.tree.values())), 3)
    run_share = round(run_cpu / (window * cores), 3) if run_cpu is not None and window > 0 else None
    return {
        "cores": cores,
        "window_s": round(window, 3),
        "machine_share": share,
        "run_cpu_s": run_cpu,
        "run_share": run_share,
        "processes": len(b.tree),
        "scope": "this machine (the driver's process tree)",
    }


def kill_new_descendants(before: Iterable[int]) -> list[int]:
    """SIGKILL every descendant of this process that is not in `before` (by pid); the
    flow's last resort when a teardown overran. Returns the pids signalled."""
    known = set(before) | {os.getpid()}
    killed = []
    for pid in process_tree():
        if pid not in known:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
    return killed

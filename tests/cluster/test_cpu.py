"""The CPU sampler: the machine's share and the run's process tree, from /proc."""

from __future__ import annotations

import os
import subprocess
import sys

from cluster.cpu import (
    Snapshot,
    cpu_between,
    kill_new_descendants,
    machine_jiffies,
    process_tree,
    snapshot,
)


def test_the_share_and_the_run_cpu_come_from_the_differences() -> None:
    a = Snapshot(10.0, (1_000, 4_000), {1: 5.0, 2: 1.0})
    b = Snapshot(12.0, (1_300, 4_400), {1: 6.0, 2: 1.5, 3: 0.5})  # 3 started meanwhile
    figures = cpu_between(a, b)
    assert figures["machine_share"] == 0.75
    assert figures["run_cpu_s"] == 2.0 and figures["processes"] == 3
    assert figures["window_s"] == 2.0
    assert figures["run_share"] == round(2.0 / (2.0 * (os.cpu_count() or 1)), 3)


def test_without_proc_nothing_is_claimed() -> None:
    figures = cpu_between(Snapshot(0.0, None), Snapshot(1.0, None))
    assert figures["machine_share"] is None and figures["run_cpu_s"] is None


def test_this_machine_reads_and_the_tree_holds_this_process_and_its_children() -> None:
    busy, total = machine_jiffies() or (0, 0)
    assert 0 <= busy <= total
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        tree = process_tree()
        assert os.getpid() in tree and child.pid in tree
        assert snapshot().tree.keys() >= {os.getpid(), child.pid}
    finally:
        child.kill()
        child.wait()


def test_only_processes_started_after_the_mark_are_killed() -> None:
    older = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    before = set(process_tree())
    newer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert kill_new_descendants(before) == [newer.pid]
        assert newer.wait() == -9 and older.poll() is None
    finally:
        older.kill()
        older.wait()

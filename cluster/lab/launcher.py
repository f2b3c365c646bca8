"""`ray up`, `ray exec`, `ray down` against a lab: the cluster launcher over the lab's SSH.

The lab must run sshd only (`lab up --no-ray`): the launcher starts Ray on every machine
itself, the head over SSH from here and the workers from the head's autoscaler. The driver
side's launcher state (the local provider's node file, SSH control sockets) goes to the lab's
state dir through TMPDIR, so nothing lands in the box's /tmp/ray.
"""

from __future__ import annotations

import time

from cluster.lab import commands, launcher_config, shell, status
from cluster.lab.state import LabState

# Ray 2.60's autoscaler v2 counts the head of a local-provider cluster against the one node
# type's max_workers, so the last worker IP never starts; v1 starts them all.
LAUNCHER_ENV = {"RAY_UP_enable_autoscaler_v2": "0"}
UP_TIMEOUT = 300.0
EXEC_TIMEOUT = 300.0
DOWN_TIMEOUT = 180.0


def _ray(state: LabState, args: list[str], timeout: float) -> str:
    plan = state.plan
    plan.launcher_tmp.mkdir(parents=True, exist_ok=True)
    if not plan.launcher_config.exists():
        launcher_config.write(plan)
    env = {**LAUNCHER_ENV, "TMPDIR": str(plan.launcher_tmp), "RAY_TMPDIR": str(plan.launcher_tmp)}
    argv = [str(plan.python_bin / "ray"), *args]
    return shell.run(argv, timeout=timeout, env=env).stdout


def ray_up(state: LabState, *, timeout: float = UP_TIMEOUT) -> str:
    """`ray up -y` with the lab's config: starts the head; its autoscaler starts the workers."""
    if state.ray:
        raise shell.LabError("this lab runs its own Ray nodes; start it with `lab up --no-ray`")
    config = str(state.plan.launcher_config)
    return _ray(state, ["up", "-y", "--no-config-cache", config], timeout)


def ray_exec(state: LabState, command: str, *, timeout: float = EXEC_TIMEOUT) -> str:
    """`ray exec CONFIG COMMAND`: run a shell command on the head over SSH; its output."""
    return _ray(state, ["exec", str(state.plan.launcher_config), command], timeout)


def ray_down(state: LabState, *, timeout: float = DOWN_TIMEOUT) -> str:
    """`ray down -y`, then `ray stop` on each worker over SSH.

    With the local provider `ray down` stops Ray on the head only (workers are just marked
    terminated; their raylets would exit a minute later, once the GCS stays gone). Each
    `ray stop` runs in its machine's PID namespace, so it sees only that machine's Ray.
    """
    out = _ray(state, ["down", "-y", str(state.plan.launcher_config)], timeout)
    for m in state.plan.machines[1:]:
        argv = commands.ssh(state.plan, m, "ray stop --force")
        out += shell.run(argv, timeout=timeout, check=False).stdout
    return out


def wait_for_nodes(state: LabState, count: int, *, timeout: float = 180.0) -> list[str]:
    """Wait until Ray sees `count` alive nodes (the autoscaler adds workers after `ray up`).

    Polls Ray from inside the head machine, with a deadline; returns the nodes' IPs.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            ips = [n["ip"] for n in status.ray_nodes(state) if n["alive"]]
        except shell.LabError:
            ips = []
        if len(ips) >= count:
            return ips
        if time.monotonic() > deadline:
            raise shell.LabError(f"timed out after {timeout:.0f}s: Ray sees nodes {ips}")
        time.sleep(2.0)

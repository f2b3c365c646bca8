"""One lab machine's life: boot (init + sshd), start its Ray node, crash it, look at it.

A machine's processes all live in its PID namespace under one init; a crash is SIGKILL to
that init (the kernel then kills the rest), a restart boots the same namespace and state
dir again, so whatever the machine stored on disk is still there.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
from pathlib import Path

from cluster.lab import commands, network, shell
from cluster.lab.plan import LabPlan, Machine
from cluster.lab.state import LabState, MachineProcess

BOOT_TIMEOUT = 20.0
RAY_START_TIMEOUT = 120.0

# Popen handles of the machines this process booted, so their `unshare` can be reaped.
_booted: dict[int, subprocess.Popen[bytes]] = {}


def write_files(plan: LabPlan, m: Machine) -> None:
    """The machine's dirs, host key, sshd config, home and init config (kept across restarts)."""
    for path in (m.dir, m.home, m.tmp, m.ray_temp):
        path.mkdir(parents=True, exist_ok=True)
    if not m.host_key.exists():
        shell.run(commands.keygen(m.host_key, f"lab host {m.name}"))
    m.sshd_config.write_text(commands.sshd_config(plan, m))
    (m.home / ".bashrc").write_text(commands.bashrc(plan, m))
    (m.home / ".profile").write_text(commands.profile())
    init = {"binds": commands.home_binds(plan, m), "sshd": commands.sshd(m), "log": str(m.log)}
    m.init_config.write_text(json.dumps(init, indent=2))


def ssh_open(m: Machine, port: int, timeout: float = 1.0) -> bool:
    """Whether the machine's sshd accepts a TCP connection (from the root namespace)."""
    try:
        with socket.create_connection((m.address, port), timeout=timeout):
            return True
    except OSError:
        return False


def init_child(unshare_pid: int) -> int | None:
    """The PID (in our namespace) of `unshare`'s child: the machine's PID 1."""
    try:
        children = Path(f"/proc/{unshare_pid}/task/{unshare_pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def boot(state: LabState, m: Machine) -> MachineProcess:
    """Start the machine's init (which starts sshd) and wait until sshd answers."""
    plan = state.plan
    write_files(plan, m)
    with m.log.open("ab") as log:
        proc = subprocess.Popen(
            commands.machine_init(plan, m),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    _booted[proc.pid] = proc
    holder: list[int] = []

    def init_started() -> bool:
        if proc.poll() is not None:
            raise shell.LabError(f"machine {m.name} exited at boot; see {m.log}")
        child = init_child(proc.pid)
        if child is not None:
            holder.append(child)
        return bool(holder)

    shell.wait_until(init_started, timeout=BOOT_TIMEOUT, what=f"{m.name}'s init")
    process = MachineProcess(unshare_pid=proc.pid, init_pid=holder[0])
    state.processes[m.name] = process
    state.save()
    shell.wait_until(
        lambda: ssh_open(m, plan.ssh_port),
        timeout=BOOT_TIMEOUT,
        what=f"sshd on {m.name} ({m.address}:{plan.ssh_port}); see {m.log}",
    )
    return process


def start_ray(state: LabState, m: Machine) -> None:
    """`ray start` inside the machine (head or joining the head); returns once the node is up."""
    argv = commands.in_machine(
        state.init_pid(m.name), commands.ray_start(state.plan, m), commands.ray_env(state.plan, m)
    )
    shell.run_logged(argv, m.dir / "ray-start.log", timeout=RAY_START_TIMEOUT)


def run_in(state: LabState, machine: str, argv: list[str], *, timeout: float = 60.0) -> str:
    """Run a command inside a machine (with the machine's environment); its stdout."""
    m = state.plan.machine(machine)
    env = commands.ray_env(state.plan, m)
    return shell.run(
        commands.in_machine(state.init_pid(machine), argv, env), timeout=timeout
    ).stdout


def crash(state: LabState, machine: str) -> None:
    """Kill every process of the machine at once: SIGKILL its PID 1, as a power cut would."""
    m = state.plan.machine(machine)
    process = state.processes.pop(machine, None)
    if process is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.init_pid, signal.SIGKILL)
    network.kill_namespace_processes(m.netns)
    if process is not None and process.unshare_pid in _booted:
        _booted.pop(process.unshare_pid).wait(timeout=5)
    state.save()


def restart(state: LabState, machine: str) -> None:
    """Boot a crashed machine again with the same address and state dir; Ray too if lab-run."""
    m = state.plan.machine(machine)
    if machine in state.processes:
        raise shell.LabError(f"machine {machine} is running; crash it first")
    boot(state, m)
    if state.ray:
        start_ray(state, m)


def process_names(m: Machine) -> list[str]:
    """The command names of every process of the machine (sshd, raylet, gcs_server...)."""
    names = []
    for pid in network.namespace_pids(m.netns):
        try:
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue
    return names


def reap_all() -> None:
    """Reap the `unshare` processes of machines this process booted that have exited."""
    for pid, proc in list(_booted.items()):
        if proc.poll() is not None:
            _booted.pop(pid)

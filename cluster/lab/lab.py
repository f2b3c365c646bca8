"""`lab up` and `lab down`: execute a plan, and undo everything it could have created.

`up` records each step in the state file before taking it, and tears down on failure; `down`
kills, deletes and removes by the state file and by name prefix, so it is idempotent and safe
after a crash of `up`.
"""

from __future__ import annotations

import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cluster.lab import commands, launcher_config, machine, network, shell
from cluster.lab.plan import DEFAULT_STATE_DIR, PREFIX, LabPlan
from cluster.lab.state import LabState

# What a lab puts in its state dir; `down` removes these entries and nothing else.
STATE_ENTRIES = ("keys", "lt", "state.json", "state.tmp", "cluster.yaml")


def up(plan: LabPlan, *, ray: bool = True) -> LabState:
    """Bridge, the plan's machines with sshd and (with `ray`) a Ray node each; the head on m0.

    With `ray=False` only sshd runs: the cluster launcher (`ray up`) starts Ray over SSH.
    """
    shell.check_can_run()
    if LabState.load(plan.state_dir) or network.lab_namespaces(plan.prefix):
        raise shell.LabError(f"a lab is already up (prefix {plan.prefix!r}); run `lab down` first")
    state = LabState(plan=plan, ray=ray)
    try:
        state.save()
        plan.keys_dir.mkdir(parents=True, exist_ok=True)
        state.note("keys")
        shell.run(commands.keygen(plan.client_key, "narwhal lab client"))
        network.create(state)
        for m in plan.machines:
            machine.boot(state, m)
        launcher_config.write(plan)
        state.note("launcher-config")
        if ray:
            start_cluster(state)
    except BaseException:
        down(plan.state_dir, prefix=plan.prefix)
        raise
    return state


def start_cluster(state: LabState) -> None:
    """The head first, then every other machine joins it (in parallel: each takes seconds)."""
    head, *others = state.plan.machines
    machine.start_ray(state, head)
    with ThreadPoolExecutor(max_workers=max(1, len(others))) as pool:
        for future in [pool.submit(machine.start_ray, state, m) for m in others]:
            future.result()


def down(state_dir: Path = DEFAULT_STATE_DIR, *, prefix: str | None = None) -> list[str]:
    """Remove the lab: processes, namespaces, bridge, keys, temp dirs. What was removed."""
    state = LabState.load(state_dir.absolute())
    if prefix is None:
        prefix = state.plan.prefix if state else PREFIX
    removed = network.destroy(prefix)
    machine.reap_all()
    removed += remove_state_dir(state_dir.absolute())
    return removed


def remove_state_dir(state_dir: Path) -> list[str]:
    """Delete the lab's entries of the state dir (machines' dirs included), then the dir if
    empty: never a whole directory the lab did not fill."""
    if not state_dir.is_dir():
        return []
    removed = []
    for entry in sorted(state_dir.iterdir()):
        is_machine = entry.is_dir() and entry.name[:1] == "m" and entry.name[1:].isdigit()
        if entry.name in STATE_ENTRIES or is_machine:
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(f"file:{entry}")
    if not any(state_dir.iterdir()):
        state_dir.rmdir()
        removed.append(f"dir:{state_dir}")
    return removed


def load(state_dir: Path = DEFAULT_STATE_DIR) -> LabState:
    """The running lab's state, or a `LabError` telling how to start one."""
    state = LabState.load(state_dir.absolute())
    if state is None:
        raise shell.LabError(f"no lab in {state_dir}; run `lab up --machines N`")
    return state

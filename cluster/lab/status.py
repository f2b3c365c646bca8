"""`lab status`: what is running in each machine, and the cluster as Ray itself sees it."""

from __future__ import annotations

import json
from typing import Any

from cluster.lab import machine, shell
from cluster.lab.state import LabState

# Run on the head machine: a driver that asks Ray for its nodes and prints them as JSON.
NODES_SCRIPT = """
import json, sys, ray
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
nodes = [{"ip": n["NodeManagerAddress"], "alive": n["Alive"], "id": n["NodeID"]}
         for n in ray.nodes()]
print("NODES=" + json.dumps(nodes))
"""


def ray_nodes(state: LabState, *, timeout: float = 60.0) -> list[dict[str, Any]]:
    """Ray's view of the cluster (ip, alive, id per node), asked from inside the head machine."""
    python = str(state.plan.python_bin / "python")
    out = machine.run_in(
        state,
        state.plan.head.name,
        [python, "-c", NODES_SCRIPT, state.plan.head_address],
        timeout=timeout,
    )
    for line in out.splitlines():
        if line.startswith("NODES="):
            return json.loads(line.removeprefix("NODES="))
    raise shell.LabError(f"no node list from the head:\n{out[-2000:]}")


def machines(state: LabState) -> list[dict[str, Any]]:
    """Per machine: address, whether its init, sshd and raylet are alive."""
    rows = []
    for m in state.plan.machines:
        names = machine.process_names(m)
        rows.append(
            {
                "machine": m.name,
                "address": m.address,
                "netns": m.netns,
                "running": m.name in state.processes and bool(names),
                "sshd": "sshd" in names and machine.ssh_open(m, state.plan.ssh_port),
                "ray": "raylet" in names,
            }
        )
    return rows


def status(state: LabState, *, ask_ray: bool = True) -> dict[str, Any]:
    """Everything `lab status` prints; Ray's view only if the head's raylet is up."""
    rows = machines(state)
    nodes: list[dict[str, Any]] | str = "no Ray node on the head"
    if ask_ray and rows[0]["ray"]:
        try:
            nodes = [n for n in ray_nodes(state) if n["alive"]]
        except shell.LabError as exc:
            nodes = f"unavailable: {exc}"
    return {
        "state_dir": str(state.plan.state_dir),
        "bridge": state.plan.bridge,
        "host_address": state.plan.host_address,
        "ray_by": "lab" if state.ray else "cluster launcher",
        "machines": rows,
        "ray_nodes": nodes,
        "head_address": state.plan.head_address,
        "ssh_key": str(state.plan.client_key),
        "launcher_config": str(state.plan.launcher_config),
    }

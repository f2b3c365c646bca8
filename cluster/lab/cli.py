"""`narwhal-testbed lab ...`: bring a namespaced lab up, look at it, fault it, take it down.

Thin: every command parses options and calls one function of the lab package. Also runs as
`python -m cluster.lab.cli` while it is not mounted under the main CLI.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from cluster.lab import lab, launcher, launcher_config, shell
from cluster.lab.faults import KernelFaults
from cluster.lab.plan import DEFAULT_STATE_DIR, make_plan
from cluster.lab.state import LabState
from cluster.lab.status import status as lab_status

app = typer.Typer(
    help="A lab of machines on this box: network namespaces, sshd and Ray, kernel faults.",
    no_args_is_help=True,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)

StateDir = Annotated[Path, typer.Option(help="Where the lab keeps keys, logs and state.")]
Machines = Annotated[list[str], typer.Argument(help="Machine names (m0, m1, ...).")]


def _fail(exc: Exception) -> typer.Exit:
    err.print(f"[red]lab: {exc}[/red]")
    return typer.Exit(1)


@app.command()
def up(
    machines: Annotated[int, typer.Option(min=1, max=200, help="Lab machines.")] = 2,
    ray: Annotated[bool, typer.Option(help="Start Ray (off: sshd only, for `ray up`).")] = True,
    subnet: Annotated[int, typer.Option(min=0, max=255, help="10.213.SUBNET.0/24.")] = 0,
    num_cpus: Annotated[int, typer.Option(min=1, help="Ray CPUs per machine.")] = 2,
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Create the bridge and N machines, each with sshd and (unless --no-ray) a Ray node."""
    try:
        plan = make_plan(machines, state_dir, subnet=subnet, num_cpus=num_cpus)
        state = lab.up(plan, ray=ray)
    except (shell.LabError, ValueError) as exc:
        raise _fail(exc) from exc
    for m in state.plan.machines:
        out.print(f"{m.name}  {m.address}")
    out.print(f"head address: {state.plan.head_address}")
    out.print(f"launcher config: {state.plan.launcher_config}")


@app.command()
def status(
    state_dir: StateDir = DEFAULT_STATE_DIR,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Machines, addresses, sshd and Ray liveness, Ray's nodes, and the head address."""
    try:
        info = lab_status(lab.load(state_dir))
    except shell.LabError as exc:
        raise _fail(exc) from exc
    if as_json:
        out.print_json(json.dumps(info))
        return
    out.print(f"bridge {info['bridge']} ({info['host_address']}), Ray by {info['ray_by']}")
    for row in info["machines"]:
        flags = " ".join(k for k in ("running", "sshd", "ray") if row[k]) or "down"
        out.print(f"  {row['machine']:<4} {row['address']:<15} {flags}")
    nodes = info["ray_nodes"]
    if isinstance(nodes, list):
        out.print(f"Ray nodes ({len(nodes)}): {', '.join(sorted(n['ip'] for n in nodes))}")
    else:
        out.print(f"Ray nodes: {nodes}")
    out.print(f"narwhal-testbed run --address {info['head_address']}")


@app.command()
def down(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Remove everything the lab created; safe to run twice or after a failed `up`."""
    try:
        shell.check_can_run()
    except shell.LabError as exc:
        raise _fail(exc) from exc
    removed = lab.down(state_dir)
    out.print(f"removed {len(removed)} lab objects" if removed else "nothing to remove")


@app.command()
def config(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Print the cluster-launcher config generated for the running lab."""
    try:
        out.print(launcher_config.render(lab.load(state_dir).plan), markup=False)
    except shell.LabError as exc:
        raise _fail(exc) from exc


@app.command("ray-up")
def ray_up(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """`ray up -y` with the lab's launcher config (lab started with --no-ray)."""
    _launch(launcher.ray_up, state_dir)


@app.command("ray-exec")
def ray_exec(
    command: Annotated[str, typer.Argument(help="Shell command to run on the head.")],
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """`ray exec CONFIG COMMAND` on the lab's head."""
    _launch(lambda s: launcher.ray_exec(s, command), state_dir)


@app.command("ray-down")
def ray_down(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """`ray down -y` with the lab's launcher config."""
    _launch(launcher.ray_down, state_dir)


def _faults(state_dir: Path) -> KernelFaults:
    try:
        return KernelFaults(lab.load(state_dir))
    except shell.LabError as exc:
        raise _fail(exc) from exc


def _launch(step: Callable[[LabState], str], state_dir: Path) -> None:
    try:
        out.print(step(lab.load(state_dir)), markup=False, highlight=False)
    except shell.LabError as exc:
        raise _fail(exc) from exc


@app.command()
def partition(
    a: Annotated[str, typer.Argument(help="Comma-separated machines, e.g. m0.")],
    b: Annotated[str, typer.Argument(help="Comma-separated machines, e.g. m1,m2.")],
    state_dir: StateDir = DEFAULT_STATE_DIR,
) -> None:
    """Drop every packet between machines A and B (in the kernel) until `heal`."""
    _faults(state_dir).partition(a.split(","), b.split(","))


@app.command()
def heal(state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Remove every partition, loss and bandwidth cap of the lab."""
    _faults(state_dir).clear()


@app.command()
def crash(names: Machines, state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Kill every process of these machines."""
    faults = _faults(state_dir)
    for name in names:
        faults.crash(name)


@app.command()
def restart(names: Machines, state_dir: StateDir = DEFAULT_STATE_DIR) -> None:
    """Boot crashed machines again (sshd, and Ray if the lab runs it)."""
    faults = _faults(state_dir)
    for name in names:
        faults.restart(name)


if __name__ == "__main__":
    app()

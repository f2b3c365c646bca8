"""Lab fixtures: skip where namespaces cannot be made, tear down always, check nothing is left.

Tests bring labs up through `make_lab`; whatever happens, each lab is taken down after its
test, and after the module the box must hold no lab namespace, link, rule or process.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cluster.lab import lab, network, shell
from cluster.lab.plan import make_plan
from cluster.lab.state import LabState

PREFIX = "nwlt"  # not the default prefix: a lab the user has up is left alone
SUBNET = 250
MakeLab = Callable[..., LabState]


def _cannot_run() -> str | None:
    """Why the lab cannot run here, or None."""
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces, bridges, nftables)"
    missing = shell.missing_binaries()
    if missing:
        return f"lab tests need {', '.join(missing)} (scripts/lab-deps.sh installs them)"
    probe = f"{PREFIX}-probe"
    made = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
    if made.returncode != 0:
        return f"cannot create a network namespace: {made.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10, check=True)
    return None


@pytest.fixture(scope="module")
def lab_support() -> None:
    reason = _cannot_run()
    if reason:
        pytest.skip(reason)


def lab_processes(marker: str) -> list[str]:
    """Command lines of processes mentioning a lab path (its sshd configs, Ray temp dirs)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(f"{proc.name}: {cmdline[:200]}")
    return found


def leftovers(state_dir: Path) -> list[str]:
    """Everything of a lab still on the box: namespaces, links, nft table, processes, files."""
    left = [f"netns {n}" for n in network.lab_namespaces(PREFIX)]
    left += [f"link {n}" for n in network.lab_links(PREFIX)]
    tables = shell.run(["nft", "list", "tables"], check=False).stdout
    left += ["nft table narwhal_lab in the root namespace"] if "narwhal_lab" in tables else []
    left += lab_processes(str(state_dir))
    left += [f"dir {state_dir}"] if state_dir.exists() else []
    return left


@pytest.fixture(scope="module")
def lab_dirs(lab_support: None) -> Iterator[list[Path]]:
    """State dirs of the module's labs; at the end, asserts none left anything behind."""
    dirs: list[Path] = []
    yield dirs
    for state_dir in dirs:
        lab.down(state_dir, prefix=PREFIX)
    left = [item for d in dirs for item in leftovers(d)]
    assert not left, f"the lab left things behind: {left}"


@pytest.fixture
def make_lab(lab_dirs: list[Path]) -> Iterator[MakeLab]:
    """`make_lab(machines, ray=True)`: a lab that is taken down after the test, pass or fail."""
    made: list[Path] = []

    def make(machines: int, *, ray: bool = True) -> LabState:
        state_dir = Path(tempfile.mkdtemp(prefix="nwlt", dir="/tmp"))
        made.append(state_dir)
        lab_dirs.append(state_dir)
        return lab.up(make_plan(machines, state_dir, prefix=PREFIX, subnet=SUBNET), ray=ray)

    try:
        yield make
    finally:
        # A driver joined to the lab through Ray Client must not outlive the test: a
        # connection left half-made would break every later ray.init in this process.
        import ray

        ray.shutdown()
    for state_dir in made:
        lab.down(state_dir, prefix=PREFIX)
        assert not leftovers(state_dir), leftovers(state_dir)

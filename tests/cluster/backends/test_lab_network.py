"""How the Ray backend turns an authority's kernel fault settings into lab rules (no root:
the lab's state file is written, the kernel primitives are recorded)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cluster.backends.lab_network import LabNetwork, lab_dir
from cluster.lab.plan import make_plan
from cluster.lab.state import LabState
from faults.scenario import ScenarioError
from worker.core.faults import FaultSettings, LinkFault

NAMES = ["a", "b", "c", "d"]
PORTS = {7000, 7001, 7002, 7003}


class FakeKernel:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def set_blocked(self, name: str, peers: list[str], *, ports: Any) -> None:
        self.calls.append(("blocked", name, sorted(peers), sorted(ports)))

    def loss(self, name: str, fraction: float, **kw: Any) -> None:
        self.calls.append(("loss", name, fraction, kw["peers"], kw["inbound"]))

    def cap_bandwidth(self, name: str, rate_bit: int, *, inbound: bool) -> None:
        self.calls.append(("cap", name, rate_bit, inbound))

    def uncap_bandwidth(self, name: str) -> None:
        self.calls.append(("uncap", name))

    def crash(self, name: str) -> None:
        self.calls.append(("crash", name))


@pytest.fixture
def lab_net() -> Iterator[tuple[LabNetwork, FakeKernel]]:
    state_dir = Path(tempfile.mkdtemp(prefix="nwu", dir="/tmp"))  # short: Ray's socket paths
    try:
        plan = make_plan(4, state_dir, prefix="nwlu", subnet=9)
        LabState(plan=plan).save()
        net = LabNetwork(plan.state_dir)
        kernel = FakeKernel()
        net.kernel = kernel  # type: ignore[assignment]
        # authority i on machine m(i+1), the last on the head (as placement puts them)
        net.bind(NAMES, [[f"10.213.9.{i}"] for i in (3, 4, 5, 2)], PORTS)
        yield net, kernel
    finally:
        shutil.rmtree(state_dir)


def test_the_lab_is_found_by_argument_or_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NARWHAL_LAB", raising=False)
    assert lab_dir() is None
    monkeypatch.setenv("NARWHAL_LAB", "/tmp/x")
    assert lab_dir() == Path("/tmp/x") and lab_dir("/tmp/y") == Path("/tmp/y")


def test_partition_loss_and_cap_become_rules_on_the_authoritys_machine(lab_net) -> None:
    net, kernel = lab_net
    assert net.ray_address == "ray://10.213.9.2:10001"
    assert net.machines == [("m1",), ("m2",), ("m3",), ("m0",)]
    settings = FaultSettings(
        blocked=frozenset({"b", "d"}),
        links={"*": LinkFault(loss=0.2, bandwidth=1000.0)},
    )
    net.apply(0, settings)
    assert kernel.calls == [
        ("blocked", "m1", ["m0", "m2"], sorted(PORTS)),
        ("loss", "m1", 0.2, None, False),
        ("cap", "m1", 8000, False),
    ]
    kernel.calls.clear()
    net.apply(0, FaultSettings(links={"c": LinkFault(loss=0.1)}))
    assert kernel.calls == [
        ("blocked", "m1", [], sorted(PORTS)),
        ("loss", "m1", 0.1, ["m3"], False),
        ("uncap", "m1"),
    ]


def test_what_the_kernel_cannot_express_is_refused(lab_net) -> None:
    net, kernel = lab_net
    per_peer = FaultSettings(links={"b": LinkFault(bandwidth=10.0)})
    with pytest.raises(ScenarioError, match="peers: all"):
        net.apply(0, per_peer)
    two = FaultSettings(links={"b": LinkFault(loss=0.1), "c": LinkFault(loss=0.2)})
    with pytest.raises(ScenarioError, match="one loss fraction"):
        net.apply(0, two)
    with pytest.raises(ScenarioError, match="head machine"):
        net.crash(3)
    assert net.crash(1) == ("m2",) and kernel.calls[-1] == ("crash", "m2")
    with pytest.raises(ScenarioError, match="share lab machine"):
        net.bind(NAMES, [["10.213.9.3"]] * 4, PORTS)
    with pytest.raises(ScenarioError, match="not a machine of the lab"):
        net.bind(NAMES, [["192.0.2.1"]] * 4, PORTS)

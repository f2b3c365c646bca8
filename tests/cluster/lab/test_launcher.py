"""`ray up -y` over the lab's SSH with the generated config, `ray exec` on the head, `ray down`.

The path ray-cluster.yaml describes, run for real: 4 machines with sshd only, the launcher
starts Ray on them, and a committee of 4 runs with one authority per machine.
"""

from __future__ import annotations

import json

import pytest

from cluster.lab import launcher, machine, network
from tests.cluster.lab.conftest import MakeLab

pytestmark = pytest.mark.slow

NODE_IPS = (
    "python -c \"import ray; ray.init(address='auto', logging_level='ERROR'); "
    "print('IPS=' + ','.join(n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']))\""
)


def test_ray_up_exec_down_on_a_four_machine_lab(make_lab: MakeLab) -> None:
    state = make_lab(4, ray=False)
    addresses = sorted(m.address for m in state.plan.machines)
    assert not any("raylet" in machine.process_names(m) for m in state.plan.machines)

    launcher.ray_up(state)
    assert sorted(launcher.wait_for_nodes(state, 4)) == addresses

    out = launcher.ray_exec(state, NODE_IPS, timeout=120)
    (line,) = [ln for ln in out.splitlines() if ln.startswith("IPS=")]
    assert sorted(line.removeprefix("IPS=").split(",")) == addresses

    # One authority per machine, through `ray exec` on the head, as a user would.
    summary_path = state.plan.head.tmp / "summary.json"
    before = {m.name: network.interface_counters(m) for m in state.plan.machines}
    run = (
        f"cd {state.plan.head.tmp} && narwhal-testbed run --address auto --authorities 4 "
        f"--rate 2000 --duration 5 --no-prometheus --results-dir {state.plan.head.tmp}/results "
        f"--json {summary_path}"
    )
    launcher.ray_exec(state, run, timeout=240)
    summary = json.loads(summary_path.read_text())
    ips = sorted(a["ray_node_ip"] for a in summary["per_authority"])
    assert ips == addresses, summary["per_authority"]
    assert summary["batches_quorum"] > 0 and summary["digest_agreement"]["ok"]
    for m in state.plan.machines:  # worker traffic crossed the bridge, through every veth
        after = network.interface_counters(m)
        assert after["tx_bytes"] - before[m.name]["tx_bytes"] > 100_000, m.name

    launcher.ray_down(state)
    assert not any("raylet" in machine.process_names(m) for m in state.plan.machines)

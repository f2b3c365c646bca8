"""The lab's pure part: names, addresses, commands, rules and the launcher config (no root)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
from ray.autoscaler._private.util import prepare_config, validate_config

from cluster.lab import commands, fault_rules, launcher_config
from cluster.lab.plan import LabPlan, make_plan
from cluster.lab.state import LabState, MachineProcess


def test_machines_get_distinct_addresses_in_the_lab_range() -> None:
    plan = make_plan(4, Path("/tmp/nwl-x"))
    assert plan.host_address == "10.213.0.1"
    assert [m.address for m in plan.machines] == [f"10.213.0.{i}" for i in (2, 3, 4, 5)]
    assert plan.head_address == "10.213.0.2:6379"
    assert len({m.netns for m in plan.machines}) == 4
    assert all(m.netns.startswith(f"{plan.prefix}-") for m in plan.machines)
    assert all(m.veth_host.startswith(plan.prefix) for m in plan.machines)


def test_names_the_kernel_or_ray_would_refuse_are_refused() -> None:
    with pytest.raises(ValueError, match="too long"):
        make_plan(2, Path("/tmp/" + "x" * 60))
    with pytest.raises(ValueError, match="prefix"):
        make_plan(2, prefix="waytoolongprefix")
    with pytest.raises(ValueError, match="machines"):
        make_plan(0)


def test_the_plan_and_state_survive_the_state_file(tmp_path: Path) -> None:
    plan = make_plan(3, Path("/tmp/nwl-x"))
    plan = dataclasses.replace(plan, state_dir=tmp_path)
    assert LabPlan.from_json(plan.to_json()) == plan
    state = LabState(plan=plan, ray=False, processes={"m0": MachineProcess(10, 11)})
    state.save()
    loaded = LabState.load(tmp_path)
    assert loaded is not None
    assert loaded.plan == plan and loaded.processes == state.processes and not loaded.ray
    assert LabState.load(tmp_path / "nothing") is None


def test_no_command_adds_a_route_or_touches_existing_interfaces() -> None:
    plan = make_plan(3, Path("/tmp/nwl-x"))
    cmds = commands.network_up(plan)
    assert not any("route" in argv for argv in cmds)
    lab_names = {plan.bridge} | {m.veth_host for m in plan.machines}
    for argv in cmds:
        if argv[:3] in (["ip", "link", "set"], ["ip", "addr", "add"]):
            assert set(argv) & (lab_names | {m.veth_peer for m in plan.machines})


def test_sshd_listens_on_the_machine_address_with_the_lab_key_only() -> None:
    plan = make_plan(2, Path("/tmp/nwl-x"))
    text = commands.sshd_config(plan, plan.machines[1])
    assert "ListenAddress 10.213.0.3" in text
    assert f"AuthorizedKeysFile {plan.authorized_keys}" in text
    assert "PasswordAuthentication no" in text


def test_ray_nodes_start_on_their_own_address_and_temp_dir() -> None:
    plan = make_plan(2, Path("/tmp/nwl-x"))
    head, other = (commands.ray_start(plan, m) for m in plan.machines)
    assert "--head" in head and "--node-ip-address=10.213.0.2" in head
    assert f"--address={plan.head_address}" in other
    assert f"--temp-dir={plan.machines[1].ray_temp}" in other


def test_the_machine_home_covers_the_real_one_after_the_interpreter() -> None:
    plan = make_plan(1, Path("/tmp/nwl-x"))
    binds = commands.home_binds(plan, plan.machines[0])
    assert binds[-1] == (str(plan.machines[0].home), str(plan.real_home))


def test_the_launcher_config_passes_the_launchers_checks() -> None:
    plan = make_plan(4, Path("/tmp/nwl-x"))
    config = launcher_config.config(plan)
    assert config["provider"]["head_ip"] == "10.213.0.2"
    assert config["provider"]["worker_ips"] == ["10.213.0.3", "10.213.0.4", "10.213.0.5"]
    assert config["auth"] == {"ssh_user": "root", "ssh_private_key": str(plan.client_key)}
    assert all("$NARWHAL_LAB_RAY_TEMP" in c for c in config["head_start_ray_commands"][1:])
    assert all("$NARWHAL_LAB_RAY_TEMP" in c for c in config["worker_start_ray_commands"][1:])
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    node_type = prepared["available_node_types"][prepared["head_node_type"]]
    assert node_type["min_workers"] == node_type["max_workers"] == 3


def test_partition_rules_drop_silently_both_ways() -> None:
    script = fault_rules.partition_script(["10.213.0.3"])
    assert "ip saddr { 10.213.0.3 } counter drop" in script
    assert "ip daddr { 10.213.0.3 } counter drop" in script
    assert "reject" not in script
    ported = fault_rules.partition_script(["10.213.0.3"], ports=[7000])
    assert ported.count("drop") == 4 and "tcp dport { 7000 }" in ported


def test_loss_is_a_setting_with_a_random_draw_per_packet() -> None:
    assert fault_rules.loss_script(0.0) == fault_rules.flush_script("loss")
    assert "numgen random mod 1000 < 250 drop" in fault_rules.loss_script(0.25)
    assert "numgen" not in fault_rules.loss_script(1.0)
    with pytest.raises(ValueError):
        fault_rules.loss_script(1.5)


def test_loss_can_keep_to_ports_and_to_what_a_machine_sends() -> None:
    script = fault_rules.loss_script(0.1, ["10.213.0.4"], ports=[7000, 7001], inbound=False)
    assert "loss_in" not in script.replace("flush chain inet narwhal_lab loss_in", "")
    assert 'oifname "eth0" ip daddr { 10.213.0.4 } tcp sport { 7000, 7001 }' in script
    assert "tcp dport { 7000, 7001 } numgen random mod 1000 < 100 drop" in script


LISTING = """table inet narwhal_lab {
\tchain partition_in {
\t\tip saddr { 10.213.0.3 } tcp dport { 7000 } counter packets 3 bytes 180 drop
\t}
\tchain partition_out {
\t\tip daddr { 10.213.0.3 } tcp sport { 7000 } counter packets 4 bytes 240 drop
\t}
\tchain loss_out {
\t\toifname "eth0" counter packets 99 bytes 1 drop
\t}
}
"""


def test_dropped_packets_are_read_from_the_partition_counters() -> None:
    assert fault_rules.dropped(LISTING, "partition") == 7
    assert fault_rules.dropped(LISTING, "loss") == 99


def test_bandwidth_cap_is_tbf() -> None:
    argv = fault_rules.tbf("eth0", 8_000_000, "ns")
    assert argv[:4] == ["ip", "netns", "exec", "ns"] and "tbf" in argv and "8000000bit" in argv

"""Scenario validation errors, seeded target resolution, and the fault state plans push."""

from pathlib import Path

import pytest

from faults.plan import PlanRunner, resolve, split_network
from faults.scenario import LIBRARY, ScenarioError, load_scenario, needs_lab
from worker.core.faults import Byzantine, FaultSettings, LinkFault

NAMES = [f"auth{i}" for i in range(7)]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def _scenario(tmp_path: Path, schedule: str, authorities: int = 7, seed: int = 3):
    return load_scenario(
        _write(
            tmp_path,
            f"""
name: t
seed: {seed}
duration: 60
committee: {{authorities: {authorities}}}
schedule:
{schedule}
""",
        )
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name: x\ncolour: red\n", "colour: unknown key"),
        ("name: x\nschedule: [{at: 1, action: explode}]\n", "schedule.0"),
        ("name: x\nschedule: [{at: 1, action: crash, targets: several}]\n", "unknown target spec"),
        ("name: x\nduration: 10\nschedule: [{at: 11, action: crash}]\n", "after the end"),
        ("name: x\nschedule: [{at: 1, action: restart, targets: ref nope}]\n", "no earlier"),
        ("name: x\nschedule: [{at: 1, action: crash, targets: [9]}]\n", "index 9 >= authorities"),
        ("name: x\ncommittee: {nodes: 4, stakes: [1, 2]}\n", "committee.stakes: unknown key"),
        (
            "name: x\nschedule: [{at: 1, action: link, fault: {loss: 2}}]\n",
            "schedule.0.link.fault.loss",
        ),
        ("- not a mapping\n", "mapping"),
    ],
)
def test_validation_errors_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message.replace(".", r"\.")):
        load_scenario(_write(tmp_path, text))


def test_specs_resolve_to_sizes_and_same_seed_same_plan(tmp_path: Path) -> None:
    schedule = """
  - {at: 1, action: crash, targets: f, id: down}
  - {at: 2, action: byzantine, targets: one, behaviour: {silent: true}}
  - {at: 3, action: partition, targets: minority}
  - {at: 4, action: crash, targets: random 3}
  - {at: 5, action: restart, targets: ref down}
  - {at: 6, action: clear}
"""
    a = resolve(_scenario(tmp_path, schedule), NAMES)
    b = resolve(_scenario(tmp_path, schedule), NAMES)
    assert [s.to_json() for s in a] == [s.to_json() for s in b]
    sizes = [len(s.targets) for s in a]
    assert sizes == [2, 1, 2, 3, 2, 7]  # f = 2 at N = 7
    assert a[4].targets == a[0].targets
    other = resolve(_scenario(tmp_path, schedule, seed=4), NAMES)
    assert [s.targets for s in other] != [s.targets for s in a]


def test_partition_blocks_both_sides_and_clear_heals(tmp_path: Path) -> None:
    plan = resolve(
        _scenario(
            tmp_path,
            """
  - {at: 1, action: partition, targets: [0, 1]}
  - {at: 9, action: clear}
""",
            authorities=4,
        ),
        NAMES[:4],
    )
    cut = plan[0].settings
    assert cut[0].blocked == {"auth2", "auth3"} and cut[2].blocked == {"auth0", "auth1"}
    assert all(s.is_clear() for s in plan[1].settings.values())


def test_regions_add_delay_between_groups_only(tmp_path: Path) -> None:
    plan = resolve(
        _scenario(
            tmp_path,
            """
  - {at: 0, action: regions, groups: [[0, 1], [2, 3]], delay: 0.1}
""",
            authorities=4,
        ),
        NAMES[:4],
    )
    links = plan[0].settings[0].links
    assert set(links) == {"auth2", "auth3"} and links["auth2"].delay == 0.1


def test_crash_recovery_cycle_kills_in_thirds_then_reboots(tmp_path: Path) -> None:
    plan = resolve(
        _scenario(
            tmp_path,
            """
  - {at: 0, action: crash_recovery, targets: all, max_down: f, period: 8, until: 16}
""",
        ),
        NAMES,
    )
    ops = [(s.at, s.op, len(s.targets)) for s in plan]
    assert ops == [
        (0, "crash", 1),
        (2, "crash", 1),
        (6, "restart", 2),
        (8, "crash", 1),
        (10, "crash", 1),
        (14, "restart", 2),
    ]
    runner = PlanRunner(plan)
    assert [s.at for s in runner.due(2.5)] == [0, 2]
    assert runner.next_at() == 6 and runner.due(1) == []


def test_shipped_scenarios_all_validate() -> None:
    shipped = sorted(LIBRARY.glob("*.yaml"))
    assert len(shipped) >= 11
    for path in shipped:
        scenario = load_scenario(path)
        resolve(scenario, NAMES[: scenario.committee.authorities])


def test_a_machine_crash_is_a_crash_step_that_needs_a_lab(tmp_path: Path) -> None:
    plain = _scenario(tmp_path, "  - {at: 1, action: crash, targets: [0]}")
    assert needs_lab(plain) is None
    assert resolve(plain, NAMES)[0].machine is False
    machine = _scenario(tmp_path, "  - {at: 1, action: crash, targets: [0], machine: true}")
    (step,) = resolve(machine, NAMES)
    assert step.op == "crash" and step.machine and step.to_json()["machine"] is True
    assert needs_lab(machine) == "a crash with machine: true"
    cycle = "  - {at: 1, action: crash_recovery, machine: true, period: 10, until: 21}"
    cycled = _scenario(tmp_path, cycle)
    crashes = [s for s in resolve(cycled, NAMES) if s.op == "crash"]
    assert crashes and all(s.machine for s in crashes) and needs_lab(cycled)
    kernel = plain.model_copy(update={"network": "kernel"})
    assert needs_lab(kernel) == "network: kernel"
    with pytest.raises(ScenarioError, match="network"):
        load_scenario(_write(tmp_path, "name: x\nnetwork: wires\n"))


def test_kernel_network_takes_partitions_loss_and_caps_and_leaves_delay() -> None:
    settings = FaultSettings(
        blocked=frozenset({"b"}),
        links={
            "*": LinkFault(delay=0.1, jitter=0.01, loss=0.05),
            "c": LinkFault(bandwidth=1000.0),
            "d": LinkFault(delay=0.2),
        },
        byzantine=Byzantine(silent=True),
    )
    emulated, kernel = split_network(settings)
    assert emulated.blocked == frozenset() and emulated.byzantine.silent
    assert emulated.links == {"*": LinkFault(delay=0.1, jitter=0.01), "d": LinkFault(delay=0.2)}
    assert kernel.blocked == {"b"} and kernel.byzantine == Byzantine()
    assert kernel.links == {"*": LinkFault(loss=0.05), "c": LinkFault(bandwidth=1000.0)}
    assert split_network(FaultSettings()) == (FaultSettings(), FaultSettings())

"""Scenario files: committee, load, seed, a schedule of timed fault actions, expectations.

Validated on load with errors naming the bad field. Targets are explicit (authority
indices, in committee order = sorted by name) or a spec resolved from the seed:
`one`, `f`, `f+1`, `minority` (= f), `majority` (= N - f, a quorum-sized set), `all`,
`random K`, or `ref NAME` (the targets an earlier action with `id: NAME` resolved to).

`network: kernel` carries partitions, loss and bandwidth caps out as real packet drops and
rate limits on a lab (cluster/lab) instead of in the worker's transport; a crash with
`machine: true` kills the whole lab machine of the authority. Both need a lab.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from worker.core.faults import Byzantine, LinkFault
from worker.errors import Refused

#: the shipped scenario library (package data)
LIBRARY = Path(__file__).resolve().parent / "library"

TargetSpec = str | list[int]
_SPEC = re.compile(r"^(one|f|f\+1|minority|majority|all|random \d+|ref [\w-]+)$")


class ScenarioError(Refused):
    """A scenario file that cannot be read or does not validate; the message says why."""

    source = "scenario"

    def __str__(self) -> str:
        return self.detail


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_spec(value: TargetSpec) -> TargetSpec:
    if isinstance(value, str) and not _SPEC.match(value):
        raise ValueError(
            f"unknown target spec {value!r} (one, f, f+1, minority, majority, all, "
            "random K, ref NAME, or a list of authority indices)"
        )
    if isinstance(value, list) and (not value or any(i < 0 for i in value)):
        raise ValueError("an explicit target list needs indices >= 0")
    return value


class _Action(_Strict):
    at: float = Field(ge=0, description="seconds after the load starts")
    id: str | None = None
    targets: TargetSpec = "one"

    _spec = field_validator("targets")(classmethod(lambda cls, v: _check_spec(v)))


class Crash(_Action):
    """Kill the targets' workers; with `machine`, every process of their lab machines."""

    action: Literal["crash"]
    machine: bool = False


class Restart(_Action):
    action: Literal["restart"]


class CrashRecovery(_Action):
    """Later Narwhal's cycle: kill a third, another third, the rest up to `max_down`,
    then reboot all; repeat every `period` seconds until `until`."""

    action: Literal["crash_recovery"]
    machine: bool = False
    targets: TargetSpec = "all"
    period: float = Field(default=10, gt=0)
    max_down: TargetSpec = "f"
    until: float = Field(gt=0)


class Partition(_Action):
    """Cut the targets off from everyone else (both directions)."""

    action: Literal["partition"]


class LinkAction(_Action):
    """Delay / jitter / loss / bandwidth on the targets' links (to `peers`, default all)."""

    action: Literal["link"]
    peers: TargetSpec = "all"
    fault: LinkFault


class Regions(_Action):
    """A latency matrix: authorities in different groups are `delay` apart (each way)."""

    action: Literal["regions"]
    targets: TargetSpec = "all"
    groups: list[list[int]]
    delay: float = Field(gt=0)
    jitter: float = Field(default=0, ge=0)


class ByzantineAction(_Action):
    action: Literal["byzantine"]
    behaviour: Byzantine


class Impersonate(_Action):
    """The targets try a handshake claiming another authority's key (`as_authority`)."""

    action: Literal["impersonate"]
    as_authority: int = Field(ge=0)


class Heal(_Action):
    """Back to honest and healed: network faults and Byzantine behaviours cleared."""

    action: Literal["clear"]
    targets: TargetSpec = "all"


Action = Annotated[
    Crash
    | Restart
    | CrashRecovery
    | Partition
    | LinkAction
    | Regions
    | ByzantineAction
    | Impersonate
    | Heal,
    Field(discriminator="action"),
]


class CommitteeShape(_Strict):
    """Unit stakes (as both backends deploy them). `nodes` is the old name of `authorities`."""

    authorities: int = Field(default=4, ge=1, validation_alias=AliasChoices("authorities", "nodes"))
    workers: int = Field(default=1, ge=1)


class Load(_Strict):
    rate: int = Field(default=10_000, ge=1)
    tx_size: int = Field(default=512, ge=17)


class Expectations(_Strict):
    """What the checker must find. Safety checks always run."""

    #: "continuous": quorum in every window; "stall": none while > f is faulty, then resume
    liveness: Literal["continuous", "stall", "any"] = "continuous"
    window: float = Field(default=2.0, gt=0, description="liveness window, seconds")
    resume_within: float = Field(default=15.0, gt=0, description="seconds after heal")
    #: the checker is expected to find a safety violation (negative-control scenarios)
    violation: bool = False
    #: checks expected to find nothing to examine (any other check that examines nothing
    #: fails, so an empty or too-short run can never pass vacuously)
    allow_empty: tuple[str, ...] = ()


class Scenario(_Strict):
    name: str
    description: str = ""
    seed: int = 0
    duration: float = Field(default=30, gt=0)
    transport: Literal["tcp", "libp2p"] | None = None
    #: where partitions, loss and bandwidth caps happen: the worker's transport, or the
    #: kernel of a lab (nftables drops, tbf); delay and jitter stay in the transport
    network: Literal["emulated", "kernel"] = "emulated"
    committee: CommitteeShape = CommitteeShape()
    load: Load = Load()
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedule: list[Action] = Field(default_factory=list)
    expect: Expectations = Expectations()

    @model_validator(mode="after")
    def _schedule(self) -> Scenario:
        ids: set[str] = set()
        for i, action in enumerate(self.schedule):
            if action.at > self.duration:
                raise ValueError(f"schedule.{i}: at={action.at} is after the end ({self.duration})")
            for spec in _specs(action):
                if isinstance(spec, str) and spec.startswith("ref ") and spec[4:] not in ids:
                    raise ValueError(f"schedule.{i}: {spec!r} names no earlier action id")
                if isinstance(spec, list) and max(spec) >= self.committee.authorities:
                    raise ValueError(f"schedule.{i}: index {max(spec)} >= authorities")
            if action.id:
                ids.add(action.id)
        return self


def needs_lab(scenario: Scenario) -> str | None:
    """Why the scenario can only run on a lab (kernel network, machine crashes), or None."""
    if scenario.network == "kernel":
        return "network: kernel"
    if any(isinstance(a, Crash | CrashRecovery) and a.machine for a in scenario.schedule):
        return "a crash with machine: true"
    return None


def _specs(action: Any) -> list[TargetSpec]:
    return [getattr(action, k) for k in ("targets", "peers", "max_down") if hasattr(action, k)]


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError("unreadable", f"cannot read scenario {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ScenarioError("not_a_mapping", f"{path}: expected a mapping at the top level")
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        lines = [f"invalid scenario {path}:"]
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  {where}: {msg.removeprefix('Value error, ')}")
        raise ScenarioError("invalid", "\n".join(lines)) from exc


def find_scenario(ref: str | Path) -> Path:
    """A scenario file by its path, or by its name in the shipped library."""
    path = Path(ref)
    if path.is_file():
        return path
    shipped = LIBRARY / f"{path.name.removesuffix('.yaml')}.yaml"
    if shipped.exists():
        return shipped
    raise ScenarioError("unknown", f"no scenario {ref} (nor {shipped.name} in the shipped library)")

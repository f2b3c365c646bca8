"""The lab's state file: the plan plus what was actually started, rewritten after every step.

`lab down` trusts it first (and falls back to name-prefix discovery), `lab status` and the
fault primitives read the machines' init PIDs from it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cluster.lab.plan import LabPlan


@dataclass
class MachineProcess:
    """The host-side PIDs of one machine: `unshare` and the machine's PID 1 (its child)."""

    unshare_pid: int
    init_pid: int


@dataclass
class LabState:
    """A lab as recorded on disk; `ray` is False when the cluster launcher starts Ray."""

    plan: LabPlan
    ray: bool = True
    processes: dict[str, MachineProcess] = field(default_factory=dict)
    created: list[str] = field(default_factory=list)

    def init_pid(self, machine: str) -> int:
        """The PID 1 of a running machine, as seen from the root namespace."""
        try:
            return self.processes[machine].init_pid
        except KeyError:
            raise KeyError(f"lab machine {machine!r} is not running") from None

    def note(self, what: str) -> None:
        """Record something created (bridge, netns, key...), then save."""
        self.created.append(what)
        self.save()

    def save(self) -> None:
        """Write atomically: a crash mid-write must not lose what `down` needs."""
        self.plan.state_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.plan.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2))
        os.replace(tmp, self.plan.state_file)

    def to_json(self) -> dict[str, Any]:
        return {
            "plan": self.plan.to_json(),
            "ray": self.ray,
            "processes": {k: vars(v) for k, v in self.processes.items()},
            "created": self.created,
        }

    @classmethod
    def load(cls, state_dir: Path) -> LabState | None:
        """The recorded lab in state_dir, or None if there is none (or it is unreadable)."""
        path = state_dir / "state.json"
        try:
            data = json.loads(path.read_text())
            return cls(
                plan=LabPlan.from_json(data["plan"]),
                ray=data["ray"],
                processes={k: MachineProcess(**v) for k, v in data["processes"].items()},
                created=list(data["created"]),
            )
        except (OSError, ValueError, KeyError, TypeError):
            return None

"""Prometheus file-based service discovery: one target per live worker (and the driver).

Each target's `instance` label is a stable name (`<authority>-w<id>` for a worker), not
its address, so a restarted worker (new port) continues the same series.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

#: Inside the package, so an installed (non-editable) package ships and finds it.
SHIPPED_CONFIG = Path(__file__).with_name("prometheus.yml")
TARGETS_FILE = "targets/workers.json"
DRIVER_INSTANCE = "driver"


@dataclass(frozen=True)
class MetricsTarget:
    address: str  # host:port of the worker's metrics endpoint
    authority: str  # short name
    worker_id: int

    @property
    def instance(self) -> str:
        return f"{self.authority}-w{self.worker_id}"


@dataclass(frozen=True)
class DriverTarget:
    """The driver's own endpoint (`metrics.injected_faults`: crashes, impersonations)."""

    address: str  # host:port
    instance: str = DRIVER_INSTANCE


def write_targets(path: str | Path, targets: Iterable[MetricsTarget | DriverTarget]) -> Path:
    """Replace the targets file atomically (Prometheus may read it at any moment)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    groups = [
        {"targets": [t.address], "labels": {"instance": t.instance}}
        for t in sorted(targets, key=lambda t: t.instance)
    ]
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(groups, indent=2))
    os.replace(tmp, path)
    return path


def prepare_config_dir(directory: str | Path) -> tuple[Path, Path]:
    """Copy the shipped config into `directory`; returns (config path, targets path)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "prometheus.yml"
    shutil.copyfile(SHIPPED_CONFIG, config)
    targets = directory / TARGETS_FILE
    if not targets.exists():
        write_targets(targets, [])
    return config, targets

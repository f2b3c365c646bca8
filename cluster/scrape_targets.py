"""Prometheus's targets file kept current through a scenario's restarts.

A restarted worker listens on new ports; its `instance` label stays the same, so once the
file names the new address its series simply continue. Without this, Prometheus kept
scraping the dead address for the rest of the run.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from metrics.service_discovery import MetricsTarget, write_targets


class TargetsKeptCurrent:
    """A backend (as the scenario runner drives it) that rewrites `path` after every
    restart; everything else is the backend's own."""

    def __init__(self, backend: Any, path: Path) -> None:
        self._backend = backend
        self._path = path
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._backend, name)

    def restart(self, index: int) -> None:
        self._backend.restart(index)
        self._rewrite()

    def _rewrite(self) -> None:
        with self._lock:  # restarts run on the lanes of their authorities, in parallel
            targets: list[MetricsTarget] = self._backend.metrics_targets()
            write_targets(self._path, targets)

"""The one experiment flow: deploy -> discover -> load (+ scenario steps) -> drain -> collect
-> stop, over a backend that hosts the committee (local processes or Ray actors).

The flow owns the order of the phases and what is measured; a backend only knows how
to do each phase on its hosts. A scenario is carried out by `faults.runner`, called
from the load loop, so its steps keep their schedule on either backend. Whatever fails,
the backend is stopped.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cluster.results import RunResult, new_run_dir
from faults.runner import ScenarioRun, ScenarioRunner, scenario_parameters
from faults.scenario import Scenario
from metrics.service_discovery import MetricsTarget, write_targets
from worker.config import Parameters

log = logging.getLogger(__name__)
#: Longest wait of the load loop between looks at the clients (and the progress shown).
TICK = 1.0


@dataclass
class ExperimentConfig:
    authorities: int = 4
    workers: int = 1
    rate: int = 20_000
    tx_size: int = 512
    duration: float = 20.0
    #: authorities that never boot (the last f, as in the original)
    faults: int = 0
    params: Parameters = field(default_factory=Parameters)
    store_dir: Path | None = None
    drain_timeout: float = 30.0
    #: None: the backend's own default (processes start faster than actors)
    startup_timeout: float | None = None
    #: write Prometheus file-SD targets here once the workers are up
    targets_file: Path | None = None
    #: seconds to keep the drained committee up so a scraper takes its last sample
    linger: float = 0.0
    #: called once the committee is up (and targets written), before the load starts
    on_ready: Callable[[], None] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "authorities": self.authorities,
            "workers": self.workers,
            "faults": self.faults,
            "transport": self.params.transport,
            "input_rate": self.rate,
            "tx_size": self.tx_size,
            "duration": self.duration,
            "batch_size": self.params.batch_size,
            "max_batch_delay": self.params.max_batch_delay,
        }

    @classmethod
    def for_scenario(cls, scenario: Scenario, transport: str | None = None) -> ExperimentConfig:
        """The committee, load and parameters the scenario names (`transport` overrides)."""
        return cls(
            authorities=scenario.committee.authorities,
            workers=scenario.committee.workers,
            rate=scenario.load.rate,
            tx_size=scenario.load.tx_size,
            duration=scenario.duration,
            params=scenario_parameters(scenario, transport),
            drain_timeout=10.0,
        )


def per_client_rate(rate: int, authorities: int, workers: int) -> int:
    """The original harness's split: every worker's client sends ceil(rate / (N * W)),
    counting the workers of faulty authorities too (they just get no client)."""
    return math.ceil(rate / (authorities * workers))


class Backend(ScenarioRun, Protocol):
    """Hosts a committee: each method is one phase of the flow, on this backend's hosts."""

    name: str

    def deploy(self, cfg: ExperimentConfig, note: Callable[[str], None]) -> list[str]:
        """Start the live authorities; returns every authority's name, in committee order."""

    def discover(self) -> None:
        """Hand every worker its peers' listen addresses; return once all are linked."""

    def metrics_targets(self) -> list[MetricsTarget]: ...

    def start_load(self, rate: int, tx_size: int, duration: float) -> None:
        """One client per live worker, `rate` tx/s each, all started together."""

    def wait_load(self, timeout: float) -> list[dict[str, Any]] | None:
        """The clients' reports once all finished, or None after `timeout` s."""

    def progress(self) -> dict[str, int] | None:
        """Live totals (transactions received, batches at quorum), None if late."""

    def drain(self, timeout: float) -> bool:
        """Wait until nothing is in flight; False on timeout."""

    def collect(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        """Workers' stats and records, and collectors' digests once every report arrived."""

    def placement(self) -> tuple[dict[str, dict[str, Any]], str | None]:
        """Where each authority ran, and a note on how the committee was placed."""

    def stop(self) -> None:
        """Stop everything this backend started (also after a failure; idempotent)."""


class RunObserver(Protocol):
    """What the flow reports while it runs (the CLI shows it with rich)."""

    def note(self, message: str) -> None: ...

    def load_started(self, duration: float) -> None: ...

    def load_tick(self, elapsed: float, live: dict[str, int] | None) -> None: ...

    def load_done(self) -> None: ...


class QuietObserver:
    def note(self, message: str) -> None:
        log.info("%s", message)

    def load_started(self, duration: float) -> None:
        pass

    def load_tick(self, elapsed: float, live: dict[str, int] | None) -> None:
        pass

    def load_done(self) -> None:
        pass


def run_experiment(
    cfg: ExperimentConfig,
    backend: Backend,
    observer: RunObserver | None = None,
    scenario: Scenario | None = None,
    out_dir: Path | None = None,
) -> RunResult:
    """Run the flow; a scenario's report goes to `out_dir` (default results/<time>-<name>/)."""
    observer = observer or QuietObserver()
    if cfg.faults and cfg.faults * 3 >= cfg.authorities:
        log.warning("faults=%d of %d: no batch can reach quorum", cfg.faults, cfg.authorities)
    try:
        names = backend.deploy(cfg, observer.note)
        backend.discover()
        observer.note(f"discovery complete over {cfg.params.transport}")
        if cfg.targets_file is not None:
            write_targets(cfg.targets_file, backend.metrics_targets())
        if cfg.on_ready is not None:
            cfg.on_ready()
        runner = None
        if scenario is not None:
            runner = ScenarioRunner(scenario, names, backend, note=observer.note)
            observer.note(
                f"{scenario.name}: seed {scenario.seed}, {len(runner.steps)} planned steps"
            )
        clients = _load(cfg, backend, observer, runner)
        if runner is not None:
            runner.load_ended()
        drained = backend.drain(cfg.drain_timeout)
        drained_at = time.time()
        time.sleep(cfg.linger)  # not a synchronisation: the scraper's interval
        workers, collectors = backend.collect()
        homes, placement_note = backend.placement()
        result = RunResult(
            backend.name,
            cfg.describe(),
            workers,
            clients,
            collectors,
            homes,
            drained,
            drained_at,
            placement_note,
        )
        if runner is not None and scenario is not None:
            extra = {
                "drained": drained,
                "clients": [{k: v for k, v in c.items() if k != "samples"} for c in clients],
            }
            out = out_dir or new_run_dir(label=scenario.name)
            result.scenario = runner.judge(collectors, out, extra)
        return result
    finally:
        backend.stop()


def _load(
    cfg: ExperimentConfig,
    backend: Backend,
    observer: RunObserver,
    runner: ScenarioRunner | None,
) -> list[dict[str, Any]]:
    """Drive the clients for `duration` s; due scenario steps run between looks at them."""
    backend.start_load(
        per_client_rate(cfg.rate, cfg.authorities, cfg.workers), cfg.tx_size, cfg.duration
    )
    start = time.monotonic()
    if runner is not None:
        runner.begin()
    observer.load_started(cfg.duration)
    clients: list[dict[str, Any]] | None = None
    try:
        while True:
            upcoming = runner.run_due() if runner is not None else None
            if clients is not None and upcoming is None:
                return clients
            wait = TICK if upcoming is None else min(TICK, upcoming)
            if clients is None:
                clients = backend.wait_load(wait)
                if clients is None:
                    # Scenario runs skip the live totals: a late answer would delay a step.
                    live = backend.progress() if runner is None else None
                    observer.load_tick(time.monotonic() - start, live)
            else:
                time.sleep(wait)  # the clients are done; the plan's last step is due then
    finally:
        observer.load_done()

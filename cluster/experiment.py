"""The one experiment flow: deploy -> discover -> load (+ scenario steps) -> drain -> collect
-> stop, over a backend that hosts the committee (local processes or Ray actors).

The flow owns the order of the phases and what is measured; a backend only knows how
to do each phase on its hosts. A scenario is carried out by `faults.runner`, called
from the load loop; it issues each step on the lane of the authority it affects (a thread
each), so its steps keep their schedule on either backend, a restart included. Whatever fails,
the backend is stopped, and every phase from the load on has a deadline, so a run ends
in bounded time whatever its faults do to the committee. The CPU used over the load is
sampled (cluster/cpu.py) for the summary's saturation flag.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from cluster.bench.ceiling import machine_speed
from cluster.cpu import cpu_between, kill_new_descendants, process_tree, snapshot
from cluster.results import RunResult, new_run_dir
from cluster.scrape_targets import TargetsKeptCurrent
from faults.report import write_aborted_report
from faults.runner import ScenarioOutcome, ScenarioRun, ScenarioRunner, scenario_parameters
from faults.scenario import Scenario
from metrics.service_discovery import MetricsTarget, write_targets
from worker.config import Parameters

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Longest wait of the load loop between looks at the clients (and the progress shown).
TICK = 1.0
#: The input rate of `run` and `local` when --rate is not given (tx/s, all clients).
#: It must leave headroom on the 2-core reference machine: at most half the knee that
#: `narwhal-testbed bench` measures there (the README's "Measured" has the latest
#: knees; the lowest libp2p knee so far was 40,000 tx/s, before the lean data path).
#: A quarter of that, because Ray adds actor processes on the same cores.
DEFAULT_RATE = 10_000
#: What the benchmark commands (`run`, `local`, `bench`) change from the worker's own
#: defaults: the original harness runs its benchmarks (fabfile `local` and `remote`, the
#: paper's runs) with `max_batch_delay` 200 ms, not the node's default of 100. Below the
#: rate that fills batches by size, the timer sets the number of batches and so of
#: worker-to-worker requests, which is what a run's CPU pays for. A parameters file or a
#: command option overrides it; scenarios keep their own parameters.
HARNESS_PARAMETERS: dict[str, int] = {"max_batch_delay": 200}
#: Seconds of the machine-speed reading after the drain (SHA-512 on one core).
SPEED_READING_S = 0.25
#: Seconds the flow waits for a teardown's stop to clean up after killing its processes.
KILL_WAIT = 5.0


@dataclass
class ExperimentConfig:
    authorities: int = 4
    workers: int = 1
    rate: int = DEFAULT_RATE
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
    # Deadlines from the load on: a run ends within duration + drain_timeout + the sum of
    # these (+ KILL_WAIT), whatever the faults; a phase past its deadline fails the run.
    #: seconds the load (clients and scenario steps) may run past `duration`
    load_grace: float = 30.0
    #: seconds to bring crashed authorities back after the load (scenarios)
    restore_timeout: float = 60.0
    #: seconds the drain call may take beyond `drain_timeout`
    drain_grace: float = 15.0
    #: seconds to collect results (and judge a scenario: each its own deadline)
    collect_timeout: float = 60.0
    #: seconds for the backend's stop; past it, the run's processes are killed
    stop_timeout: float = 45.0

    def describe(self) -> dict[str, Any]:
        return {
            "authorities": self.authorities,
            "workers": self.workers,
            "faults": self.faults,
            "transport": self.params.transport,
            "libp2p_security": self.params.libp2p_security,
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
    """Run the flow; a scenario's report goes to `out_dir` (default results/<time>-<name>/).

    From the load on, every phase runs under a deadline (see `ExperimentConfig`): a phase
    that overruns, or fails, ends the run's use of the committee; the result then carries
    the problem (so `ok` is False) and whatever was collected, and a scenario still gets
    its report. Deploy and discovery are bounded by the backend's startup timeouts."""
    observer = observer or QuietObserver()
    if cfg.faults and cfg.faults * 3 >= cfg.authorities:
        log.warning("faults=%d of %d: no batch can reach quorum", cfg.faults, cfg.authorities)
    before = set(process_tree())  # processes of the run are the ones that appear later
    problems: list[str] = []
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
            driven: Any = backend
            if cfg.targets_file is not None:
                driven = TargetsKeptCurrent(backend, cfg.targets_file)
            runner = ScenarioRunner(scenario, names, driven, note=observer.note)
            observer.note(
                f"{scenario.name}: seed {scenario.seed}, {len(runner.steps)} planned steps"
            )
        result = _measure(cfg, backend, observer, runner, problems)
        if runner is not None and scenario is not None:
            out = out_dir or new_run_dir(label=scenario.name)
            result.faulted = True  # the report's saturation flag then reads as the summary's
            result.scenario = _judge(cfg, runner, result, out)
        return result
    finally:
        _teardown(cfg, backend, before, problems)


def _measure(
    cfg: ExperimentConfig,
    backend: Backend,
    observer: RunObserver,
    runner: ScenarioRunner | None,
    problems: list[str],
) -> RunResult:
    """Load, drain and collect, each phase under its deadline; stops at the first failure."""
    clients: list[dict[str, Any]] = []
    drained, drained_at = False, 0.0
    workers: list[dict[str, Any]] = []
    collectors: dict[str, dict[str, Any]] = {}
    homes: dict[str, dict[str, Any]] = {}
    placement_note = None
    speed: dict[str, Any] = {}
    marks = [snapshot()]
    try:
        observer.load_started(cfg.duration)
        try:
            load_budget = cfg.duration + cfg.load_grace
            clients = within("load", load_budget, _load, cfg, backend, observer, runner)
        finally:
            marks.append(snapshot())
            observer.load_done()
        if runner is not None:  # crashed authorities come back to have their stores read
            within("restoring crashed authorities", cfg.restore_timeout, runner.load_ended)
        drain_budget = cfg.drain_timeout + cfg.drain_grace
        drained = within("drain", drain_budget, backend.drain, cfg.drain_timeout)
        drained_at = time.time()
        marks.append(snapshot())
        # Read the machine's speed after the CPU marks (it costs the run nothing); it
        # fills the scraper's linger, which is not a synchronisation.
        started = time.monotonic()
        speed = machine_speed(SPEED_READING_S)
        time.sleep(max(0.0, cfg.linger - (time.monotonic() - started)))
        workers, collectors = within("collect", cfg.collect_timeout, backend.collect)
        homes, placement_note = backend.placement()
    except Exception as exc:  # a phase overran or a backend call failed: say so, go on
        problems.append(_problem(exc))
        log.error("run failed: %s", problems[-1])
    if len(marks) == 2:
        marks.append(marks[-1])
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
        problems=problems,
        machine_speed=speed,
    )
    result.cpu = {"load": cpu_between(marks[0], marks[1]), "run": cpu_between(marks[0], marks[2])}
    return result


def _judge(
    cfg: ExperimentConfig, runner: ScenarioRunner, result: RunResult, out: Path
) -> ScenarioOutcome:
    """The scenario's verdict and report; an aborted run gets a report saying why."""
    extra = {
        "drained": result.drained,
        "problems": result.problems,
        **result.load_figures(),
        "clients": [{k: v for k, v in c.items() if k != "samples"} for c in result.clients],
    }
    if not result.problems:
        try:
            judge = runner.judge
            return within("judging", cfg.collect_timeout, judge, result.collectors, out, extra)
        except Exception as exc:
            result.problems.append(_problem(exc))
    reason = f"aborted: {'; '.join(result.problems)}"
    s = runner.scenario
    write_aborted_report(out, s, runner.names, runner.steps, reason, runner.ran, extra)
    return ScenarioOutcome(s.name, False, reason, out, [])


def _problem(exc: Exception) -> str:
    """A failed phase, in the words the summary shows."""
    return str(exc) if isinstance(exc, PhaseOverrun) else f"{type(exc).__name__}: {exc}"


def _teardown(
    cfg: ExperimentConfig, backend: Backend, before: set[int], problems: list[str]
) -> None:
    """Stop the backend within `stop_timeout`; past it, kill the run's processes by pid."""
    try:
        within("stop", cfg.stop_timeout, backend.stop)
    except PhaseOverrun as exc:
        killed = kill_new_descendants(before)
        problems.append(f"{exc}; killed {len(killed)} process(es) of the run")
        log.error("%s", problems[-1])
        exc.thread.join(min(KILL_WAIT, cfg.stop_timeout))  # its cleanup, now unblocked
    except Exception as exc:
        problems.append(f"stop failed: {exc!r}")
        log.error("%s", problems[-1])


class PhaseOverrun(Exception):
    """A phase of the flow was still running at its deadline (it is left behind)."""

    def __init__(self, what: str, timeout: float, thread: threading.Thread) -> None:
        super().__init__(f"{what} still running after {timeout:g} s")
        self.thread = thread


def within(what: str, timeout: float, fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on a thread of its own, waited for at most `timeout` s.

    The flow's phases call a backend synchronously and some of its calls wait on peers:
    the thread lets the flow move on (to teardown) when a call does not come back."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # re-raised in the flow's thread
            box["error"] = exc

    thread = threading.Thread(target=target, name=f"flow-{what}", daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise PhaseOverrun(what, timeout, thread)
    if "error" in box:
        raise box["error"]
    return box["value"]


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
    clients: list[dict[str, Any]] | None = None
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

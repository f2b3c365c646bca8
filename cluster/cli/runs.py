"""Experiments: `local` and `run` call the one flow on their backend; `scenarios` lists
the shipped library. Both write results/<timestamp>/ (summary.json and the report)."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from cluster.cli.common import app, err, fail, parameters
from cluster.cli.options import (
    SET_BY_SCENARIO,
    Address,
    Authorities,
    BatchSize,
    DrainTimeout,
    Duration,
    Faults,
    JsonOut,
    Lab,
    MaxBatchDelay,
    Nodes,
    ParametersFile,
    Prometheus,
    Rate,
    ResultsDir,
    ScenarioOpt,
    StoreDir,
    TransportOpt,
    TxSize,
    Verbose,
    Workers,
)
from cluster.experiment import DEFAULT_RATE, HARNESS_PARAMETERS, ExperimentConfig
from faults.scenario import LIBRARY, Scenario, ScenarioError, find_scenario, load_scenario

if TYPE_CHECKING:
    from cluster.experiment import Backend
    from cluster.results import RunResult


def _config(ctx: typer.Context, o: dict[str, Any]) -> tuple[ExperimentConfig, Scenario | None]:
    """The run's settings: from the options, or from the scenario file plus the options
    that make sense with one (any other option given is refused, naming it)."""
    if o["scenario"] is None:
        authorities = o["nodes"] or o["authorities"]
        if o["faults"] >= authorities:
            fail("--faults must be smaller than --authorities")
        params = parameters(
            o["parameters"],
            HARNESS_PARAMETERS,
            transport=o["transport"],
            batch_size=o["batch_size"],
            max_batch_delay=o["max_batch_delay"],
        )
        cfg = ExperimentConfig(
            authorities=authorities,
            workers=o["workers"],
            rate=o["rate"],
            tx_size=o["tx_size"],
            duration=o["duration"],
            faults=o["faults"],
            params=params,
            store_dir=o["store_dir"],
            drain_timeout=o["drain_timeout"],
        )
        return cfg, None
    given = [flag for name, flag in SET_BY_SCENARIO.items() if _given(ctx, name)]
    if given:
        fail(f"the scenario sets {', '.join(given)} itself: drop them or edit the scenario")
    scenario = _scenario(o["scenario"])
    try:
        cfg = ExperimentConfig.for_scenario(scenario, o["transport"])
    except ValueError as exc:
        fail(f"invalid scenario parameters: {exc}")
    cfg.store_dir = o["store_dir"]
    return cfg, scenario


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option was given (on the command line or in the environment)."""
    source = ctx.get_parameter_source(name)  # typer vendors click: compare by name
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _scenario(ref: str) -> Scenario:
    try:
        return load_scenario(find_scenario(ref))
    except ScenarioError as exc:
        fail(str(exc))


@contextmanager
def _prometheus(enabled: bool, run_dir: Path) -> Iterator[Path | None]:
    """Prometheus on the shipped config, its data in <run dir>/prometheus."""
    if not enabled:
        yield None
        return
    from metrics.prometheus_server import PrometheusServer, PrometheusUnavailable
    from metrics.service_discovery import prepare_config_dir

    config, targets = prepare_config_dir(run_dir / "prometheus")
    try:
        server = PrometheusServer(config, run_dir / "prometheus" / "data")
        url = server.start()
    except PrometheusUnavailable as exc:
        fail(str(exc))
    err.print(f"Prometheus: {url} (targets: {targets}; data kept in {run_dir / 'prometheus'})")
    try:
        yield targets
    finally:
        server.stop()


def _experiment(
    ctx: typer.Context,
    make_backend: Callable[[], Backend],
    unavailable: tuple[type[Exception], ...],
    o: dict[str, Any],
) -> None:
    from cluster.experiment import run_experiment
    from cluster.progress import RichObserver
    from cluster.results import new_run_dir

    logging.basicConfig(level=logging.INFO if o["verbose"] else logging.WARNING)
    cfg, scenario = _config(ctx, o)
    run_dir = new_run_dir(o["results_dir"], scenario.name if scenario else None)
    err.print(
        f"starting {cfg.authorities - cfg.faults} of {cfg.authorities} authorities x "
        f"{cfg.workers} worker(s) over {cfg.params.transport}, {cfg.rate:,} tx/s of "
        f"{cfg.tx_size} B for {cfg.duration:g} s"
    )
    try:
        with _prometheus(o["prometheus"], run_dir) as targets:
            if targets is not None:
                cfg.targets_file, cfg.linger = targets, 2.5
            result = run_experiment(cfg, make_backend(), RichObserver(err), scenario, run_dir)
    except unavailable as exc:
        _discard(run_dir)
        fail(str(exc))
    except BaseException:
        _discard(run_dir)
        raise
    _conclude(result, run_dir, o["json_out"])


def _discard(run_dir: Path) -> None:
    """A run that never ran leaves no empty results directory behind."""
    if run_dir.is_dir() and not any(run_dir.iterdir()):
        run_dir.rmdir()


def _conclude(result: RunResult, run_dir: Path, json_out: Path | None) -> None:
    """The report, the digest agreement (or the scenario's verdict), the result files, and a
    failing exit if the run failed."""
    from cluster.results import format_report, write_json, write_results
    from faults.report import saturation_banner

    summary = result.summary()
    typer.echo(format_report(summary))
    agreement = summary["digest_agreement"]
    typer.echo(
        f"Digest agreement: {'OK' if agreement['ok'] else 'FAILED'} "
        f"({agreement['batches_checked']} batches checked)"
    )
    for problem in agreement["problems"]:
        typer.echo(f"  {problem}")
    if (outcome := result.scenario) is not None:
        for check in outcome.checks:
            mark = "[green]pass[/green]" if check["ok"] else "[red]FAIL[/red]"
            err.print(f"  {mark}  {check['name']}: {check['evidence']}")
        typer.echo(f"Verdict: {'PASS' if outcome.ok else 'FAIL'} ({outcome.verdict})")
        typer.echo(f"Report: {outcome.out_dir}")
    if not summary["drained"]:
        typer.echo("NOT DRAINED: batches were still in flight when the drain timed out")
    if summary["saturated"]:
        typer.echo(saturation_banner(summary["saturation"]))
    typer.echo(f"Results: {write_results(summary, run_dir)}")
    if json_out:
        write_json(summary, json_out)
        err.print(f"summary written to {json_out}")
    if not result.ok:
        raise typer.Exit(1)


#: the load's duration when --duration is not given
DEFAULT_DURATION = {"local": 20.0, "run": 30.0}


def experiment(
    ctx: typer.Context,
    authorities: Authorities = 4,
    nodes: Nodes = None,
    workers: Workers = 1,
    rate: Rate = DEFAULT_RATE,
    tx_size: TxSize = 512,
    duration: Duration = None,
    faults: Faults = 0,
    transport: TransportOpt = None,
    batch_size: BatchSize = None,
    max_batch_delay: MaxBatchDelay = None,
    parameters: ParametersFile = None,
    address: Address = None,
    store_dir: StoreDir = None,
    drain_timeout: DrainTimeout = 30,
    results_dir: ResultsDir = Path("results"),
    json_out: JsonOut = None,
    prometheus: Prometheus = False,
    scenario: ScenarioOpt = None,
    lab: Lab = None,
    verbose: Verbose = False,
) -> None:
    """`local` and `run`: the same options, one flow; the command names the backend."""
    options = {**locals(), "duration": duration or DEFAULT_DURATION[ctx.info_name or "run"]}
    if lab is not None:  # the backends read it (kernel-network scenarios run on the lab)
        from cluster.backends.lab_network import LAB_ENV

        os.environ[LAB_ENV] = str(lab.resolve())
    if ctx.info_name == "local":
        from cluster.backends.local import LocalBackend

        if address is not None:
            fail("--address joins a Ray cluster: use `run`")
        _experiment(ctx, LocalBackend, (), options)
    else:
        from cluster.backends.ray import RayBackend
        from cluster.ray.connect import RayUnavailable

        _experiment(ctx, lambda: RayBackend(address), (RayUnavailable,), options)


app.command(
    "local",
    help="Run a committee as local processes, one per authority (no Ray), and print the "
    "summary. Default --duration 20.",
)(experiment)
app.command(
    "run",
    help="Run a committee as Ray actors (embedded Ray, or --address) and print the summary. "
    "Default --duration 30.",
)(experiment)


@app.command()
def scenarios() -> None:
    """List the shipped fault scenarios and what each expects."""
    for path in sorted(LIBRARY.glob("*.yaml")):
        s = load_scenario(path)
        expect = "violation found" if s.expect.violation else f"liveness {s.expect.liveness}"
        typer.echo(
            f"{path.stem:<22} N={s.committee.authorities}  {s.duration:>4g}s  expect: {expect}"
        )
        typer.echo(f"{'':<22} {' '.join(s.description.split())}")

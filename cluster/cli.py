"""The `narwhal-testbed` command line."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import trio
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from worker.config import ConfigError, Parameters, load_parameters, save_model
from worker.keys import KeyPair

app = typer.Typer(
    help="Byzantine-fault testbed for the Narwhal worker layer.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)

# Options shared by `local` and `run`.
Nodes = Annotated[int, typer.Option(min=1, help="Authorities.")]
Workers = Annotated[int, typer.Option(min=1, help="Workers per authority.")]
Rate = Annotated[int, typer.Option(min=1, help="Total input rate (tx/s).")]
TxSize = Annotated[int, typer.Option(min=9, help="Transaction size (bytes).")]
Duration = Annotated[float, typer.Option(min=1, help="Load duration (s).")]
Faults = Annotated[int, typer.Option(min=0, help="Authorities that never boot.")]
TransportOpt = Annotated[str | None, typer.Option(help="tcp or libp2p.")]
BatchSize = Annotated[int | None, typer.Option(help="Bytes that seal a batch.")]
MaxBatchDelay = Annotated[int | None, typer.Option(help="ms before sealing.")]
StoreDir = Annotated[Path | None, typer.Option(help="Keep the stores here.")]
DrainTimeout = Annotated[
    float, typer.Option(min=0, help="Max s to wait for in-flight batches after the load.")
]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Write the summary.")]
Prometheus = Annotated[bool, typer.Option(help="Start a local Prometheus scraping the workers.")]
Verbose = Annotated[bool, typer.Option("--verbose", "-v")]


def _fail(message: str) -> None:
    err.print(f"[red]error:[/red] {message}")
    raise typer.Exit(2)


def _parameters(path: Path | None, **overrides: Any) -> Parameters:
    try:
        base = load_parameters(path)
        values = {k: v for k, v in overrides.items() if v is not None}
        return Parameters.model_validate({**base.model_dump(), **values})
    except ConfigError as exc:
        _fail(str(exc))
    except ValueError as exc:
        _fail(f"invalid parameters: {exc}")
    raise AssertionError("unreachable")


@app.command()
def keys(
    path: Annotated[Path, typer.Argument(help="Where to write the key file (JSON).")],
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a fresh ed25519 authority key file."""
    if path.exists() and not force:
        _fail(f"{path} exists (use --force to overwrite)")
    pair = KeyPair.generate()
    pair.save(path)
    typer.echo(pair.name)


@app.command()
def committee(
    out_dir: Annotated[Path, typer.Argument(help="Directory for committee.json and keys.")],
    nodes: Annotated[int, typer.Option(min=1, help="Authorities (N = 3f+1).")] = 4,
    workers: Workers = 1,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Write a local committee of N authorities x W workers on free ports, with their keys."""
    from cluster.committee import make_local_committee

    comm, pairs = make_local_committee(nodes, workers, host=host)
    for i, pair in enumerate(pairs):
        pair.save(out_dir / f"node-{i}.json")
    save_model(comm, out_dir / "committee.json")
    typer.echo(
        f"wrote {out_dir / 'committee.json'} (quorum {comm.quorum_threshold()}, "
        f"validity {comm.validity_threshold()}) and {nodes} key files"
    )


def _progress_task(label: str):
    async def show(duration: float) -> None:
        with Progress(
            TextColumn(label),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
            TimeRemainingColumn(),
            console=err,
            transient=True,
        ) as progress:
            task = progress.add_task(label, total=duration)
            start = trio.current_time()
            while (elapsed := trio.current_time() - start) < duration:
                progress.update(task, completed=elapsed)
                await trio.sleep(0.5)

    return show


@contextmanager
def _local_prometheus(enabled: bool, label: str) -> Iterator[Path | None]:
    """Start Prometheus on the shipped config in results/<time>-<label>/prometheus."""
    if not enabled:
        yield None
        return
    from metrics.prometheus_server import PrometheusServer, PrometheusUnavailable
    from metrics.service_discovery import prepare_config_dir

    run_dir = Path("results") / f"{time.strftime('%Y%m%d-%H%M%S')}-{label}" / "prometheus"
    config, targets = prepare_config_dir(run_dir)
    try:
        server = PrometheusServer(config, run_dir / "data")
        url = server.start()
    except PrometheusUnavailable as exc:
        _fail(str(exc))
    err.print(f"Prometheus: {url} (targets: {targets}; data kept in {run_dir / 'data'})")
    try:
        yield targets
    finally:
        server.stop()


def _conclude(
    summary: dict[str, Any], json_out: Path | None, results_dir: Path | None = None
) -> None:
    """The digest-agreement verdict, the result files, and a failing exit if they disagree."""
    from cluster.summary import write_json

    agreement = summary["digest_agreement"]
    typer.echo(
        f"Digest agreement: {'OK' if agreement['ok'] else 'FAILED'} "
        f"({agreement['batches_checked']} batches checked)"
    )
    for problem in agreement["problems"]:
        typer.echo(f"  {problem}")
    if results_dir is not None:
        from cluster.ray.report import write_results

        typer.echo(f"Results: {write_results(summary, results_dir)}")
    if json_out:
        write_json(summary, json_out)
        err.print(f"summary written to {json_out}")
    if not agreement["ok"]:
        raise typer.Exit(1)


@app.command()
def local(
    nodes: Nodes = 4,
    workers: Workers = 1,
    rate: Rate = 20_000,
    tx_size: TxSize = 512,
    duration: Duration = 20,
    faults: Faults = 0,
    transport: TransportOpt = None,
    batch_size: BatchSize = None,
    max_batch_delay: MaxBatchDelay = None,
    parameters: Annotated[Path | None, typer.Option(help="Parameters file.")] = None,
    store_dir: StoreDir = None,
    drain_timeout: DrainTimeout = 30,
    json_out: JsonOut = None,
    prometheus: Prometheus = False,
    verbose: Verbose = False,
) -> None:
    """Run a committee as local processes (no Ray) and print the benchmark summary."""
    from cluster.backends.local import LocalRunConfig, run_local
    from cluster.summary import format_summary

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    if faults >= nodes:
        _fail("--faults must be smaller than --nodes")
    params = _parameters(
        parameters, transport=transport, batch_size=batch_size, max_batch_delay=max_batch_delay
    )
    cfg = LocalRunConfig(
        nodes, workers, rate, tx_size, duration, faults, params, store_dir, drain_timeout
    )
    err.print(
        f"starting {nodes - faults} of {nodes} authorities x {workers} worker(s) "
        f"over {params.transport}, {rate:,} tx/s of {tx_size} B for {duration:g} s"
    )
    with _local_prometheus(prometheus, "local") as targets:
        if targets is not None:
            cfg.targets_file, cfg.linger = targets, 2.5
        summary = run_local(cfg, progress=_progress_task("load"))
    typer.echo(format_summary(summary))
    _conclude(summary, json_out)


@app.command()
def run(
    nodes: Nodes = 4,
    workers: Workers = 1,
    rate: Rate = 20_000,
    tx_size: TxSize = 512,
    duration: Duration = 30,
    faults: Faults = 0,
    transport: TransportOpt = None,
    batch_size: BatchSize = None,
    max_batch_delay: MaxBatchDelay = None,
    config: Annotated[
        Path | None, typer.Option("--config", "--parameters", help="Parameters file.")
    ] = None,
    address: Annotated[
        str | None, typer.Option(help="Join a Ray cluster ('auto' or host:port).")
    ] = None,
    store_dir: StoreDir = None,
    drain_timeout: DrainTimeout = 30,
    results_dir: Annotated[Path, typer.Option(help="Where results/<time>/ goes.")] = Path(
        "results"
    ),
    json_out: JsonOut = None,
    prometheus: Prometheus = False,
    scenario: Annotated[
        Path | None, typer.Option(help="Run a fault scenario (see `narwhal-testbed scenarios`).")
    ] = None,
    verbose: Verbose = False,
) -> None:
    """Run a committee as Ray actors (embedded Ray, or --address) and print the summary."""
    if scenario is not None:
        _run_scenario(scenario, address, results_dir)
        return
    from cluster.backends.ray import RayRunConfig, run_ray
    from cluster.progress import RichObserver
    from cluster.ray.connect import RayUnavailable
    from cluster.ray.report import format_run_summary

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING)
    if faults >= nodes:
        _fail("--faults must be smaller than --nodes")
    params = _parameters(
        config, transport=transport, batch_size=batch_size, max_batch_delay=max_batch_delay
    )
    cfg = RayRunConfig(
        nodes=nodes,
        workers=workers,
        rate=rate,
        tx_size=tx_size,
        duration=duration,
        faults=faults,
        params=params,
        store_dir=store_dir,
        drain_timeout=drain_timeout,
        address=address,
    )
    err.print(
        f"starting {nodes - faults} of {nodes} authorities x {workers} worker(s) on "
        f"{'Ray at ' + address if address else 'an embedded Ray'} over {params.transport}, "
        f"{rate:,} tx/s of {tx_size} B for {duration:g} s"
    )
    try:
        with _local_prometheus(prometheus, "run") as targets:
            if targets is not None:
                cfg.targets_file, cfg.linger = targets, 2.5
            summary = run_ray(cfg, RichObserver(err))
    except RayUnavailable as exc:
        _fail(str(exc))
    typer.echo(format_run_summary(summary))
    _conclude(summary, json_out, results_dir=results_dir)


from faults.scenario import LIBRARY as SHIPPED_SCENARIOS  # noqa: E402


def _find_scenario(path: Path) -> Path:
    if path.exists():
        return path
    shipped = SHIPPED_SCENARIOS / f"{path.name.removesuffix('.yaml')}.yaml"
    if shipped.exists():
        return shipped
    _fail(f"no scenario {path} (nor {shipped.name} in the shipped library)")
    raise AssertionError("unreachable")


def _run_scenario(path: Path, address: str | None, results_dir: Path) -> None:
    from cluster.ray.connect import RayUnavailable
    from faults.runner import run_scenario
    from faults.scenario import ScenarioError, load_scenario

    logging.basicConfig(level=logging.ERROR)
    try:
        scenario = load_scenario(_find_scenario(path))
    except ScenarioError as exc:
        _fail(str(exc))
    try:
        outcome = run_scenario(scenario, results_dir, address, note=err.print)
    except RayUnavailable as exc:
        _fail(str(exc))
    for check in outcome.checks:
        mark = "[green]pass[/green]" if check["ok"] else "[red]FAIL[/red]"
        err.print(f"  {mark}  {check['name']}: {check['evidence']}")
    typer.echo(f"Verdict: {'PASS' if outcome.ok else 'FAIL'} ({outcome.verdict})")
    typer.echo(f"Report: {outcome.out_dir}")
    if not outcome.ok:
        raise typer.Exit(1)


@app.command()
def scenarios() -> None:
    """List the shipped fault scenarios and what each expects."""
    from faults.scenario import load_scenario

    for path in sorted(SHIPPED_SCENARIOS.glob("*.yaml")):
        s = load_scenario(path)
        expect = "violation found" if s.expect.violation else f"liveness {s.expect.liveness}"
        typer.echo(f"{path.stem:<22} N={s.committee.nodes}  {s.duration:>4g}s  expect: {expect}")
        typer.echo(f"{'':<22} {' '.join(s.description.split())}")


@app.command()
def node(
    committee_file: Annotated[Path, typer.Option("--committee", help="Committee file.")],
    key_file: Annotated[Path, typer.Option("--keys", help="This authority's key file.")],
    store: Annotated[Path, typer.Option(help="Directory for the LevelDB stores.")],
    parameters: Annotated[Path | None, typer.Option(help="Parameters file.")] = None,
    worker_id: Annotated[list[int] | None, typer.Option("--id", help="Worker id(s).")] = None,
    collector: Annotated[bool, typer.Option(help="Also run the digest collector.")] = True,
) -> None:
    """Run one authority's workers (and its digest collector) until interrupted."""
    from primary.digest_collector import DigestCollector
    from worker.config import load_committee
    from worker.keys import KeyFileError
    from worker.worker import Worker

    logging.basicConfig(level=logging.INFO)
    try:
        comm = load_committee(committee_file)
        pair = KeyPair.load(key_file)
    except (ConfigError, KeyFileError) as exc:
        _fail(str(exc))
    params = _parameters(parameters)
    if pair.name not in comm.authorities:
        _fail(f"key {pair.name} is not in the committee {committee_file}")
    ids = worker_id or sorted(comm.authorities[pair.name].workers)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            if collector:
                host, port = comm.authorities[pair.name].primary.hostport
                await nursery.start(DigestCollector(host, port).serve)
            for wid in ids:
                info = await nursery.start(
                    Worker(
                        comm, pair.name, wid, params, store / f"worker-{wid}", keypair=pair
                    ).run
                )
                typer.echo(json.dumps(info), file=sys.stdout)
                sys.stdout.flush()
            with trio.open_signal_receiver(2, 15) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)


if __name__ == "__main__":
    app()

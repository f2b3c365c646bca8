"""Option definitions shared by the commands (one definition per option)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cluster.experiment import HARNESS_PARAMETERS
from worker.config import Parameters

Authorities = Annotated[int, typer.Option("--authorities", min=1, help="Authorities (N = 3f+1).")]
#: the old name of --authorities, still accepted
Nodes = Annotated[int | None, typer.Option("--nodes", min=1, hidden=True)]
Workers = Annotated[int, typer.Option(min=1, help="Workers per authority.")]
Rate = Annotated[int, typer.Option(min=1, help="Total input rate (tx/s).")]
TxSize = Annotated[int, typer.Option(min=9, help="Transaction size (bytes).")]
Duration = Annotated[float | None, typer.Option(min=1, help="Load duration (s).")]
Faults = Annotated[int, typer.Option(min=0, help="Authorities that never boot.")]
TransportOpt = Annotated[str | None, typer.Option(help="tcp or libp2p.")]
BatchSize = Annotated[int | None, typer.Option(help="Bytes that seal a batch.")]
MaxBatchDelay = Annotated[
    int | None,
    typer.Option(
        help=f"ms before sealing (default {HARNESS_PARAMETERS['max_batch_delay']} as in the"
        f" original harness; a node's: {Parameters.model_fields['max_batch_delay'].default})."
    ),
]
ParametersFile = Annotated[
    Path | None, typer.Option("--parameters", "--config", help="Parameters file.")
]
StoreDir = Annotated[Path | None, typer.Option(help="Keep the stores here.")]
DrainTimeout = Annotated[
    float, typer.Option(min=0, help="Max s to wait for in-flight batches after the load.")
]
ResultsDir = Annotated[Path, typer.Option(help="Where results/<time>/ goes.")]
JsonOut = Annotated[Path | None, typer.Option("--json", help="Also write the summary here.")]
Prometheus = Annotated[bool, typer.Option(help="Start a local Prometheus scraping the workers.")]
ScenarioOpt = Annotated[
    str | None,
    typer.Option(help="Run a fault scenario: a file or a shipped name (`scenarios` lists them)."),
]
Address = Annotated[
    str | None, typer.Option(help="`run` only: join a Ray cluster ('auto' or host:port).")
]
Verbose = Annotated[bool, typer.Option("--verbose", "-v")]
Lab = Annotated[
    Path | None,
    typer.Option(
        "--lab",
        help="State dir of a `narwhal-testbed lab`; needed for scenarios with network: kernel.",
    ),
]

#: What a scenario file sets itself: giving one of these with --scenario is an error.
SET_BY_SCENARIO = {
    "authorities": "--authorities",
    "nodes": "--nodes",
    "workers": "--workers",
    "rate": "--rate",
    "tx_size": "--tx-size",
    "duration": "--duration",
    "faults": "--faults",
    "batch_size": "--batch-size",
    "max_batch_delay": "--max-batch-delay",
    "parameters": "--parameters",
    "drain_timeout": "--drain-timeout",
}

"""Commands that write or serve files: `keys`, `committee`, and `authority`."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Annotated

import trio
import typer

from cluster.cli.common import app, fail, parameters
from cluster.cli.options import Authorities, Nodes, Workers
from worker.config import ConfigError, load_committee, save_model
from worker.keys import KeyFileError, KeyPair


@app.command()
def keys(
    path: Annotated[Path, typer.Argument(help="Where to write the key file (JSON).")],
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a fresh ed25519 authority key file."""
    if path.exists() and not force:
        fail(f"{path} exists (use --force to overwrite)")
    pair = KeyPair.generate()
    pair.save(path)
    typer.echo(pair.name)


@app.command()
def committee(
    out_dir: Annotated[Path, typer.Argument(help="Directory for committee.json and keys.")],
    authorities: Authorities = 4,
    nodes: Nodes = None,
    workers: Workers = 1,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
) -> None:
    """Write a local committee of N authorities x W workers on free ports, with their keys."""
    from cluster.committee import make_local_committee

    n = nodes or authorities
    comm, pairs = make_local_committee(n, workers, host=host)
    for i, pair in enumerate(pairs):
        pair.save(out_dir / f"authority-{i}.json")
    save_model(comm, out_dir / "committee.json")
    typer.echo(
        f"wrote {out_dir / 'committee.json'} (quorum {comm.quorum_threshold()}, "
        f"validity {comm.validity_threshold()}) and {n} key files"
    )


def authority(
    committee_file: Annotated[Path, typer.Option("--committee", help="Committee file.")],
    key_file: Annotated[Path, typer.Option("--keys", help="This authority's key file.")],
    store: Annotated[Path, typer.Option(help="Directory for the LevelDB stores.")],
    parameters_file: Annotated[
        Path | None, typer.Option("--parameters", help="Parameters file.")
    ] = None,
    worker_id: Annotated[list[int] | None, typer.Option("--id", help="Worker id(s).")] = None,
    collector: Annotated[bool, typer.Option(help="Also run the digest collector.")] = True,
) -> None:
    """Run one authority's workers (and its digest collector) until interrupted."""
    import logging

    from cluster.authority import AuthorityHost

    logging.basicConfig(level=logging.INFO)
    try:
        comm = load_committee(committee_file)
        pair = KeyPair.load(key_file)
    except (ConfigError, KeyFileError) as exc:
        fail(str(exc))
    params = parameters(parameters_file)
    if pair.name not in comm.authorities:
        fail(f"key {pair.name} is not in the committee {committee_file}")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            host = AuthorityHost(comm, params, pair, store, worker_id or None, collector)
            for info in await host.start(nursery):
                print(json.dumps(info), file=sys.stdout, flush=True)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    nursery.cancel_scope.cancel()
                    break

    trio.run(main)


app.command()(authority)
app.command("node", hidden=True)(authority)  # the old name of `authority`

"""`narwhal-testbed local`: a committee as local processes, driven by load clients.

Each authority runs in its own process (its digest collector and its W workers on one
trio loop), so the committee uses every core; the load clients run as trio tasks in
the driver. The driver talks to each process over a pipe: ready -> drain -> stop.
"""

from __future__ import annotations

import logging
import math
import multiprocessing as mp
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import trio

from cluster.committee import make_local_committee
from cluster.load_client import run_load_client
from cluster.summary import summarize
from faults.agreement import check_digest_agreement
from metrics.service_discovery import MetricsTarget, write_targets
from primary.digest_collector import DigestCollector
from worker.config import Committee, Parameters
from worker.keys import KeyPair, short_name
from worker.worker import Worker

log = logging.getLogger(__name__)


@dataclass
class LocalRunConfig:
    nodes: int = 4
    workers: int = 1
    rate: int = 20_000
    tx_size: int = 512
    duration: float = 20.0
    faults: int = 0
    params: Parameters = field(default_factory=Parameters)
    store_dir: Path | None = None
    drain_timeout: float = 30.0
    startup_timeout: float = 60.0
    #: write Prometheus file-SD targets here once the workers are up
    targets_file: Path | None = None
    #: seconds to keep the drained committee up so a scraper takes its last sample
    linger: float = 0.0
    #: called once the committee is up (and targets written), before the load starts
    on_ready: Callable[[], None] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "nodes": self.nodes,
            "workers": self.workers,
            "faults": self.faults,
            "transport": self.params.transport,
            "input_rate": self.rate,
            "tx_size": self.tx_size,
            "duration": self.duration,
            "batch_size": self.params.batch_size,
            "max_batch_delay": self.params.max_batch_delay,
        }


# -- the authority process ----------------------------------------------------------------
def authority_process(
    committee_json: str, params_json: str, seed: bytes, store_dir: str, conn: Connection
) -> None:
    """Entry point of one authority's process (spawned)."""
    logging.basicConfig(level=logging.WARNING)
    committee = Committee.model_validate_json(committee_json)
    params = Parameters.model_validate_json(params_json)
    keypair = KeyPair.generate(seed)
    try:
        results = trio.run(_authority_main, committee, params, keypair, Path(store_dir), conn)
        conn.send(("results", results))
    except Exception as exc:  # report, so the driver fails with the cause
        conn.send(("error", repr(exc)))
        raise


async def _recv(conn: Connection) -> Any:
    return await trio.to_thread.run_sync(conn.recv, abandon_on_cancel=True)


async def _discover(nodes: list[Worker], peers: dict[int, dict[str, str]]) -> None:
    """Hand every worker its peers' listen addresses; return once all are connected."""
    for node in nodes:
        add = getattr(node.transport, "add_peer_addr", None)
        wait = getattr(node.transport, "wait_discovery", None)
        if add is None or wait is None:
            continue  # TCP: dials the committee's addresses, nothing to learn
        live = {p: a for p, a in peers.get(node.worker_id, {}).items() if p != node.name}
        for peer, address in live.items():
            add(peer, address)
        await wait(set(live))  # authorities that never booted are not waited for


async def _authority_main(
    committee: Committee, params: Parameters, keypair: KeyPair, store_dir: Path, conn: Connection
) -> dict[str, Any]:
    name = keypair.name
    host, port = committee.authorities[name].primary.hostport
    collector = DigestCollector(host, port)
    nodes = [
        Worker(
            committee, name, wid, params,
            store_dir / f"{name[:8]}-w{wid}".replace("/", "_"),
            metrics_address=(committee.worker(name, wid).transactions_hostport[0], 0),
            keypair=keypair,
        )
        for wid in sorted(committee.authorities[name].workers)
    ]  # fmt: skip
    async with trio.open_nursery() as nursery:
        await nursery.start(collector.serve)
        infos = [await nursery.start(node.run) for node in nodes]
        conn.send(("ready", infos))
        _, peers, timeout = await _recv(conn)
        with trio.fail_after(timeout):
            await _discover(nodes, peers)
        conn.send(("discovered", True))
        _, drain_timeout = await _recv(conn)
        with trio.move_on_after(drain_timeout):
            for node in nodes:
                await node.wait_idle()
        conn.send(("drained", all(node.idle() for node in nodes)))
        await _recv(conn)  # linger: the driver lets scrapers take a last sample
        await _recv(conn)  # stop
        with trio.move_on_after(5):
            # the reporters have no event to await: poll until their queues are empty
            while any(n.processor and n.processor.reporter.queued for n in nodes):
                await trio.sleep(0.01)
            sent = sum(node.processor.reporter.sent for node in nodes if node.processor)
            await collector.wait_for(lambda: collector.reports >= sent)
        results = {
            "authority": name,
            "workers": [{**node.stats(), "records": node.records_json()} for node in nodes],
            "collector": collector.digests.to_json(),
        }
        nursery.cancel_scope.cancel()
    return results


# -- the driver ---------------------------------------------------------------------------
def _metrics_targets(infos: list[dict[str, Any]]) -> list[MetricsTarget]:
    return [
        MetricsTarget(i["metrics"], short_name(i["authority"]), i["worker_id"])
        for i in infos
        if i.get("metrics")
    ]


def _expect(conn: Connection, proc: mp.process.BaseProcess, kind: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not conn.poll(0.1):
        if not proc.is_alive():
            raise RuntimeError(f"authority process exited (code {proc.exitcode}) before {kind!r}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"authority process sent no {kind!r} within {timeout:.0f} s")
    msg = conn.recv()
    if msg[0] == "error":
        raise RuntimeError(f"authority process failed: {msg[1]}")
    if msg[0] != kind:
        raise RuntimeError(f"expected {kind!r} from an authority process, got {msg[0]!r}")
    return msg[1]


async def _drive_clients(
    committee: Committee, live: list[str], cfg: LocalRunConfig, progress: Any
) -> list[dict[str, Any]]:
    total_workers = cfg.nodes * cfg.workers
    per_client = math.ceil(cfg.rate / total_workers)
    reports: list[dict[str, Any]] = []

    async def one(address: str) -> None:
        report = await run_load_client(address, per_client, cfg.tx_size, cfg.duration)
        reports.append(report.to_json())

    async with trio.open_nursery() as nursery:
        for name in live:
            for addrs in committee.authorities[name].workers.values():
                nursery.start_soon(one, addrs.transactions)
        if progress is not None:
            nursery.start_soon(progress, cfg.duration)
    return reports


def run_local(cfg: LocalRunConfig, progress: Any = None) -> dict[str, Any]:
    """Run the committee, drive the load, return the summary (with agreement check)."""
    if cfg.faults * 3 >= cfg.nodes and cfg.faults:
        log.warning(
            "faults=%d of %d nodes: more than f, no batch can reach quorum", cfg.faults, cfg.nodes
        )
    committee, keys = make_local_committee(cfg.nodes, cfg.workers)
    live_keys = keys[: cfg.nodes - cfg.faults]  # the last f never boot
    live = [k.name for k in live_keys]
    store_root = cfg.store_dir or Path(tempfile.mkdtemp(prefix="narwhal-local-"))
    ctx = mp.get_context("spawn")
    procs: list[tuple[mp.process.BaseProcess, Connection]] = []
    try:
        for key in live_keys:
            parent, child = ctx.Pipe()
            proc = ctx.Process(
                target=authority_process,
                args=(
                    committee.model_dump_json(),
                    cfg.params.model_dump_json(),
                    key.seed,
                    str(store_root),
                    child,
                ),
                daemon=True,
            )
            proc.start()
            procs.append((proc, parent))
        infos = [i for p, c in procs for i in _expect(c, p, "ready", cfg.startup_timeout)]
        peers: dict[int, dict[str, str]] = {}
        for info in infos:
            peers.setdefault(info["worker_id"], {})[info["authority"]] = info["worker_to_worker"]
        for _, conn in procs:
            conn.send(("peers", peers, cfg.startup_timeout))
        for proc, conn in procs:
            _expect(conn, proc, "discovered", cfg.startup_timeout + 10)
        if cfg.targets_file is not None:
            write_targets(cfg.targets_file, _metrics_targets(infos))
        if cfg.on_ready is not None:
            cfg.on_ready()
        clients = trio.run(_drive_clients, committee, live, cfg, progress)
        for _, conn in procs:
            conn.send(("drain", cfg.drain_timeout))
        drained = [_expect(c, p, "drained", cfg.drain_timeout + 10) for p, c in procs]
        drained_at = time.time()
        time.sleep(cfg.linger)
        for _, conn in procs:
            conn.send(("linger_done",))
        for _, conn in procs:
            conn.send(("stop",))
        results = [_expect(c, p, "results", 30) for p, c in procs]
        for proc, _ in procs:
            proc.join(timeout=10)
    finally:
        for proc, _ in procs:
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
        if cfg.store_dir is None:
            shutil.rmtree(store_root, ignore_errors=True)
    workers = [w for r in results for w in r["workers"]]
    summary = summarize(cfg.describe(), workers, clients)
    summary["drained"] = all(drained)
    summary["drained_at"] = drained_at
    summary["digest_agreement"] = check_digest_agreement(
        workers, {r["authority"]: r["collector"] for r in results}
    )
    summary["per_worker"] = [{k: v for k, v in w.items() if k != "records"} for w in workers]
    return summary

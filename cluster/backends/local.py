"""The local backend: one process per authority on this machine, clients in the driver.

Each authority's process (cluster/backends/authority_process.py) holds its collector and
its workers, so the committee uses every core; the load clients run as trio tasks on a
thread of the driver. A crash kills the authority's process; the collector's digests,
which stand for the primary (a process of its own in Narwhal, which a worker crash
leaves alone), are read just before (the collector stopped first) and kept for the
checker. A restart spawns a fresh process on the same stores and keys, on the same
committee entry, and rediscovers it. Scenario steps call in from one thread per
authority (faults/lanes.py), so every handle is safe to share between threads.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import trio

from cluster.backends.authority_process import READY, authority_process
from cluster.backends.crashed import Crashed
from cluster.committee import make_local_committee
from cluster.experiment import ExperimentConfig
from cluster.load_client import run_load_client
from faults.scenario import ScenarioError
from metrics.service_discovery import MetricsTarget
from worker.core.faults import FaultSettings
from worker.keys import KeyPair, short_name

log = logging.getLogger(__name__)
CALL_TIMEOUT = 60.0
#: seconds a restarted authority waits for its links before looking again at who is up
REDISCOVERY_SLICE = 2.0


class AuthorityProcess:
    """The driver's handle on one authority's process: send commands, await their answers.

    Several threads may talk to one process at once (the scenario runner's lanes, one per
    authority, and a restart's rediscovery, which tells every peer): sends are serialised,
    and one reader thread files every answer under its request id for whoever waits."""

    def __init__(self, ctx: Any, key: KeyPair, committee_json: str, params_json: str, store: str):
        self.name = key.name
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(
            target=authority_process,
            args=(committee_json, params_json, key.seed, store, child),
            daemon=True,
        )
        self.proc.start()
        child.close()
        self._next = READY + 1
        self._send = threading.Lock()
        self._filed = threading.Condition()
        self._answers: dict[int, tuple[bool, Any]] = {}
        self._closed = False
        self.infos: list[dict[str, Any]] = []
        threading.Thread(target=self._read, name=f"answers-{key.name[:8]}", daemon=True).start()

    def _read(self) -> None:
        """File answers until the pipe ends (the process exited, or was killed)."""
        while True:
            try:
                got, ok, value = self.conn.recv()
            except (EOFError, OSError):
                break
            with self._filed:
                self._answers[got] = (ok, value)
                self._filed.notify_all()
        with self._filed:
            self._closed = True
            self._filed.notify_all()

    def submit(self, command: str, *args: Any) -> int:
        with self._send:
            request, self._next = self._next, self._next + 1
            self.conn.send((request, command, args))
        return request

    def answer(self, request: int, timeout: float, what: str) -> Any:
        """Wait for the answer to `request` (or the process's death, or `timeout`)."""
        deadline = time.monotonic() + timeout
        with self._filed:
            while request not in self._answers:
                remaining = deadline - time.monotonic()
                if self._closed:  # every answer sent before the end was filed first
                    break
                if remaining <= 0:
                    raise TimeoutError(f"{what}: {short_name(self.name)} silent for {timeout:g} s")
                self._filed.wait(remaining)
            found = self._answers.pop(request, None)
        if found is None:
            self._died(what)
        ok, value = found
        if not ok:
            raise RuntimeError(f"{what}: {short_name(self.name)} failed: {value}")
        return value

    def _died(self, what: str) -> NoReturn:
        self.proc.join(5)
        code = self.proc.exitcode
        raise ProcessGone(f"{what}: {short_name(self.name)} exited (code {code})")

    def call(self, command: str, *args: Any, timeout: float = CALL_TIMEOUT) -> Any:
        return self.answer(self.submit(command, *args), timeout, command)

    def kill(self) -> None:
        """SIGKILL: no graceful stop, as a crash."""
        self.proc.kill()
        self.proc.join()
        self.conn.close()

    @staticmethod
    def stop_all(procs: list[AuthorityProcess], timeout: float = 30.0) -> None:
        """Stop every process at once, so none dials a peer that already left."""
        asked = []
        for p in procs:
            if p.proc.is_alive():
                with contextlib.suppress(OSError):
                    asked.append((p, p.submit("stop")))
        for p, request in asked:
            try:
                p.answer(request, timeout, "stop")
                p.proc.join(timeout)
            except (RuntimeError, TimeoutError) as exc:
                log.warning("authority %s did not stop cleanly: %s", short_name(p.name), exc)
        for p in procs:
            if p.proc.is_alive():
                p.proc.terminate()
                p.proc.join(5)
            p.conn.close()


class ProcessGone(RuntimeError):
    """The authority's process ended before it answered (killed by a crash, or died)."""


class LocalBackend:
    name = "local"
    #: local processes share one network namespace: no kernel faults, no machine to crash
    on_lab = False

    def __init__(self) -> None:
        self.procs: dict[int, AuthorityProcess] = {}
        self.names: list[str] = []
        self._store_root: Path | None = None
        self._remove_stores = False
        self._crashed = Crashed()
        self._impostors: list[tuple[AuthorityProcess, int]] = []
        self._load: threading.Thread | None = None
        self._clients: list[dict[str, Any]] = []
        self._load_error: BaseException | None = None

    # -- deploy and discover ----------------------------------------------------------------
    def deploy(self, cfg: ExperimentConfig, note: Callable[[str], None]) -> list[str]:
        self.cfg = cfg
        self.timeout = cfg.startup_timeout or 60.0
        self.committee, self.keys = make_local_committee(cfg.authorities, cfg.workers)
        self.names = [k.name for k in self.keys]
        self._remove_stores = cfg.store_dir is None
        self._store_root = cfg.store_dir or Path(tempfile.mkdtemp(prefix="narwhal-local-"))
        self._ctx = mp.get_context("spawn")
        for i in range(cfg.authorities - cfg.faults):  # the last f never boot
            self.procs[i] = self._spawn(i)
        for proc in self.procs.values():
            proc.infos = proc.answer(READY, self.timeout, "starting")
        note(
            f"{len(self.procs)} of {cfg.authorities} authorities x {cfg.workers} worker(s) "
            "up as local processes"
        )
        return self.names

    def _spawn(self, index: int) -> AuthorityProcess:
        return AuthorityProcess(
            self._ctx,
            self.keys[index],
            self.committee.model_dump_json(),
            self.cfg.params.model_dump_json(),
            str(self._store_root / short_name(self.names[index]).replace("/", "_")),
        )

    def _addresses(self) -> dict[int, dict[str, str]]:
        """Every running worker's listen address: worker id -> authority -> address."""
        addresses: dict[int, dict[str, str]] = {}
        for proc in list(self.procs.values()):
            for info in proc.infos:
                addresses.setdefault(info["worker_id"], {})[info["authority"]] = info[
                    "worker_to_worker"
                ]
        return addresses

    def discover(self) -> None:
        """Every live worker learns every peer's address; returns once all are linked."""
        addresses = self._addresses()
        live = [p.name for p in self.procs.values()]
        calls = [
            (p, p.submit("discover", addresses, live, self.timeout)) for p in self.procs.values()
        ]
        for proc, request in calls:
            proc.answer(request, self.timeout + 10, "discovery")

    def _rediscover(self, index: int, timeout: float) -> None:
        """A restarted authority and its peers learn each other's addresses; returns once
        it is linked to every peer that is still up. Peers may crash meanwhile (other
        lanes of the scenario runner): they are left out, not waited for."""
        fresh = self.procs[index]
        addresses = self._addresses()
        news = {info["worker_id"]: {fresh.name: info["worker_to_worker"]} for info in fresh.infos}
        calls = [(fresh, fresh.submit("learn", addresses))]
        calls += [(p, p.submit("learn", news)) for i, p in list(self.procs.items()) if i != index]
        for proc, request in calls:
            with contextlib.suppress(ProcessGone):  # crashed meanwhile: nothing to tell
                proc.answer(request, timeout, "learning addresses")
        deadline = time.monotonic() + timeout
        while True:
            up = [p.name for i, p in list(self.procs.items()) if i != index]
            missing = set(fresh.call("linked", up, REDISCOVERY_SLICE, timeout=timeout))
            missing &= {p.name for p in list(self.procs.values())}  # still up now
            if not missing:
                return
            if time.monotonic() > deadline:
                names = ", ".join(sorted(short_name(m) for m in missing))
                raise TimeoutError(f"restart of {short_name(fresh.name)}: not linked to {names}")

    def metrics_targets(self) -> list[MetricsTarget]:
        return [
            MetricsTarget(i["metrics"], short_name(i["authority"]), i["worker_id"])
            for p in self.procs.values()
            for i in p.infos
            if i.get("metrics")
        ]

    # -- load -------------------------------------------------------------------------------
    def start_load(self, rate: int, tx_size: int, duration: float) -> None:
        targets = [i["transactions"] for p in self.procs.values() for i in p.infos]

        async def clients() -> None:
            async def one(address: str) -> None:
                report = await run_load_client(address, rate, tx_size, duration)
                self._clients.append(report.to_json())

            async with trio.open_nursery() as nursery:
                for address in targets:
                    nursery.start_soon(one, address)

        def main() -> None:
            try:
                trio.run(clients)
            except BaseException as exc:  # re-raised by wait_load in the driver's thread
                self._load_error = exc

        self._load = threading.Thread(target=main, name="load-clients", daemon=True)
        self._load.start()

    def wait_load(self, timeout: float) -> list[dict[str, Any]] | None:
        assert self._load is not None
        self._load.join(timeout)
        if self._load.is_alive():
            return None
        if self._load_error is not None:
            raise RuntimeError("the load clients failed") from self._load_error
        return self._clients

    def progress(self) -> dict[str, int] | None:
        calls = [(p, p.submit("progress")) for p in self.procs.values()]
        try:
            figures = [p.answer(r, 2.0, "progress") for p, r in calls]
        except TimeoutError:
            return None  # a busy authority answers late: skip this tick
        return {k: sum(f[k] for f in figures) for k in ("transactions_received", "batches_quorum")}

    # -- scenario steps (faults.runner.ScenarioRun) ----------------------------------------
    def crash(self, index: int) -> None:
        """Kill the authority's process; what its collector received is read first (and
        the collector stopped, so nothing is confirmed that the read does not show)."""
        proc = self.procs.pop(index)
        self._crashed.keep(proc.name, proc.call("freeze"))
        proc.kill()

    def restart(self, index: int) -> None:
        proc = self._spawn(index)
        proc.infos = proc.answer(READY, CALL_TIMEOUT, "restarting")
        self.procs[index] = proc
        self._rediscover(index, CALL_TIMEOUT)

    def crash_machine(self, index: int) -> None:
        raise ScenarioError("lab_required", "a machine crash needs a lab (docs/lab.md)")

    def set_faults(self, index: int, settings: FaultSettings) -> None:
        self.procs[index].call("set_faults", settings.model_dump_json())

    def set_network(self, index: int, settings: FaultSettings) -> None:
        raise ScenarioError("lab_required", "network: kernel needs a lab (docs/lab.md)")

    def impersonate(self, index: int, victim: int) -> None:
        proc = self.procs[index]
        peers: dict[int, dict[str, str]] = {}
        for other in list(self.procs.values()):
            for info in other.infos:
                peers.setdefault(info["worker_id"], {})[other.name] = info["worker_to_worker"]
        self._impostors.append((proc, proc.submit("impersonate", self.names[victim], peers)))

    def impersonations(self) -> list[dict[str, Any]]:
        done = [p.answer(r, CALL_TIMEOUT, "impersonation") for p, r in self._impostors]
        return [attempt for attempts in done for attempt in attempts]

    def evidence(self) -> list[dict[str, Any]]:
        calls = [(p, p.submit("evidence")) for p in self.procs.values()]
        return [
            self._crashed.evidence(e)
            for p, r in calls
            for e in p.answer(r, CALL_TIMEOUT, "evidence")
        ]

    # -- drain, collect, stop -------------------------------------------------------------
    def drain(self, timeout: float) -> bool:
        calls = [(p, p.submit("drain", timeout)) for p in self.procs.values()]
        return all([p.answer(r, timeout + 10, "drain") for p, r in calls])

    def collect(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        calls = [(p, p.submit("collect", 5.0)) for p in self.procs.values()]
        results = [p.answer(r, 30, "collect") for p, r in calls]
        workers = [self._crashed.worker(w) for r in results for w in r["workers"]]
        collectors = {
            r["authority"]: self._crashed.collector(r["authority"], r["collector"]) for r in results
        }
        return workers, collectors

    def placement(self) -> tuple[dict[str, dict[str, Any]], str | None]:
        return {}, None

    def stop(self) -> None:
        AuthorityProcess.stop_all(list(self.procs.values()))
        self.procs.clear()
        if self._load is not None:
            self._load.join(5)
        if self._remove_stores and self._store_root is not None:
            shutil.rmtree(self._store_root, ignore_errors=True)
            self._store_root = None

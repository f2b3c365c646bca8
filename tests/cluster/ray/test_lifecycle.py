"""Host actors on an embedded Ray: start, discovery, load, crash + restart, graceful stop.

One Ray instance for the module and one 4 x 1 committee per transport; the tests run in
file order and each phase builds on the previous one (deployed -> loaded -> restarted
-> stopped). One machine: each authority (collector and worker) is one process, and the
load clients of the node share one more.
"""

from __future__ import annotations

import contextlib
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
import ray

from cluster.ray.committee import RayCommittee
from cluster.ray.connect import connect
from cluster.ray.load import RayLoad
from faults.agreement import check_digest_agreement
from worker.config import Parameters
from worker.store import BatchStore

pytestmark = pytest.mark.slow

PARAMS = Parameters(
    batch_size=20_000,
    max_batch_delay=20,
    retry_initial_delay=20,
    retry_max_delay=500,
    post_quorum_delivery=1_000,
    max_message_size=1 << 20,
    max_transaction_size=4096,
    sync_writes=False,
)
RAY_DAEMONS = ("raylet", "gcs_server")


def ray_daemons() -> list[psutil.Process]:
    """Ray's daemons started by this test process (others' Ray instances are not ours)."""
    return [p for p in psutil.Process().children(recursive=True) if p.name() in RAY_DAEMONS]


def wait_gone(pids: list[int], timeout: float = 30.0) -> list[int]:
    """Pids still running after `timeout` s. Polled: process exit has no event to await."""
    procs = []
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return [p.pid for p in alive if p.status() != psutil.STATUS_ZOMBIE]


@pytest.fixture(scope="module")
def ray_instance() -> Iterator[None]:
    assert connect(None, num_cpus=2)  # as `run` does: held to loopback
    daemons = ray_daemons()
    try:
        yield
    finally:
        ray.shutdown()
        assert daemons, "expected this test to have started raylet and gcs_server"
        assert wait_gone([p.pid for p in daemons]) == []


@pytest.fixture(scope="module", params=["tcp", "libp2p"])
def committee(
    request: pytest.FixtureRequest, ray_instance: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RayCommittee]:
    params = PARAMS.model_copy(update={"transport": request.param})
    store_root = tmp_path_factory.mktemp(f"stores-{request.param}")
    deployed = RayCommittee(4, 1, params, store_root=str(store_root))
    try:
        deployed.deploy(timeout=120)
        yield deployed
    finally:
        deployed.stop(remove_stores=True)


@pytest.fixture(scope="module")
def load(committee: RayCommittee) -> Iterator[RayLoad]:
    clients = RayLoad(committee)
    try:
        yield clients
    finally:
        clients.stop()


def _run_load(committee: RayCommittee, load: RayLoad, seconds: float = 2.0) -> list[dict]:
    reports = load.run(rate=500, tx_size=256, duration=seconds)
    assert committee.drain(timeout=30)
    return reports


def test_workers_report_real_addresses_and_discovery_completes(committee: RayCommittee) -> None:
    assert committee.committee is not None
    libp2p = committee.params.transport == "libp2p"
    for slot in committee.workers:
        entry = committee.committee.worker(slot.authority, slot.worker_id)
        assert slot.info["transactions"] == entry.transactions
        if libp2p:  # a real port and the PeerId, as dialed by its peers
            assert re.fullmatch(
                r"/ip4/127\.0\.0\.1/tcp/[1-9]\d*/p2p/\w+", slot.info["worker_to_worker"]
            )
            assert slot.info["worker_to_worker"].endswith(f"/p2p/{slot.info['peer_id']}")
        else:
            assert slot.info["worker_to_worker"] == entry.worker_to_worker
        assert slot.info["host"] == "127.0.0.1"
        assert slot.info["nice"] == 0  # not Ray's default 15: a benchmark needs its CPU share
        assert slot.info["ray_node_id"] == slot.node.node_id
        assert Path(slot.info["store"]) == Path(slot.store_dir)
    pids = {slot.info["pid"] for slot in committee.workers}
    assert {auth.info["pid"] for auth in committee.authorities} == pids
    assert len(pids) == 4  # one process per authority: its collector and its worker
    discovery = committee.discover(timeout=10)
    assert all(d["complete"] and len(d["peers"]) == 3 for d in discovery)
    if libp2p:  # every worker authenticated each peer under the PeerId that peer reported
        peer_ids = {s.authority: s.info["peer_id"] for s in committee.workers}
        for slot, found in zip(committee.workers, discovery, strict=True):
            expected = {a: p for a, p in peer_ids.items() if a != slot.authority}
            assert found["peer_ids"] == {slot.worker_id: expected}


def test_load_reaches_quorum_and_collectors_agree(committee: RayCommittee, load: RayLoad) -> None:
    assert len(set(load.pids)) == 1  # one node: every client in one load process
    reports = _run_load(committee, load)
    assert len(reports) == 4
    assert all(r["sent"] > 0 for r in reports)
    workers, collectors = committee.collect()
    assert all(w["batches_quorum"] > 0 for w in workers)
    sent = sum(r["sent"] for r in reports)
    assert sum(r["transactions"] for w in workers for r in w["records"]) == sent
    digests = {name: c["digests"] for name, c in collectors.items()}
    agreement = check_digest_agreement(workers, digests)
    assert agreement["ok"], agreement["problems"]


def test_crashed_authority_restarts_on_its_node_with_its_store_and_rejoins(
    committee: RayCommittee, load: RayLoad
) -> None:
    slot = committee.workers[1]
    node_id, old_pid, peer_id = slot.info["ray_node_id"], slot.info["pid"], slot.info["peer_id"]
    stored_before = ray.get(slot.actor.stored_batches.remote(slot.worker_id))
    assert stored_before > 0
    workers, collected = committee.collect()
    records = next(w["records"] for w in workers if w["authority"] == slot.authority)

    kept = committee.crash_authority(slot.authority)
    assert kept["digests"] == collected[slot.authority]["digests"]  # the primary's, read first
    assert kept["records"] == {slot.worker_id: records}  # and the worker's quorum records
    assert wait_gone([old_pid]) == []
    assert len(committee.running_workers) == 3
    committee.restart_authority(slot.authority)

    assert slot.info["ray_node_id"] == node_id and slot.info["pid"] != old_pid
    assert slot.info["store"] == slot.store_dir
    assert slot.info["peer_id"] == peer_id  # None for TCP; the same PeerId for libp2p
    assert ray.get(slot.actor.stored_batches.remote(slot.worker_id)) >= stored_before

    _run_load(committee, load)
    rejoined = next(w for w in committee.collect()[0] if w["authority"] == slot.authority)
    assert rejoined["batches_quorum"] > 0  # its own batches reached its peers again
    assert rejoined["persisted"].get("peer", 0) > 0  # and its peers' batches reached it
    assert ray.get(slot.actor.stored_batches.remote(slot.worker_id)) > stored_before


def test_graceful_stop_closes_stores_and_frees_ports_and_processes(
    committee: RayCommittee, load: RayLoad
) -> None:
    assert committee.committee is not None
    pids = [s.info["pid"] for s in committee.workers] + load.pids
    addresses = [a.address for a in committee.authorities] + [
        addr for s in committee.workers for addr in s.addresses.values()
    ]
    for slot in committee.workers:  # libp2p listens where it reported, not on the reservation
        if m := re.match(r"/ip4/([\d.]+)/tcp/(\d+)/", slot.info["worker_to_worker"]):
            addresses.append(f"{m.group(1)}:{m.group(2)}")
    load.stop()
    stopped = committee.stop(remove_stores=False)
    assert len(stopped) == 4 and all(s["stores_closed"] for s in stopped), stopped
    assert wait_gone(pids) == []
    ports = {int(a.rpartition(":")[2]) for a in addresses}
    listening = {
        c.laddr.port
        for c in psutil.net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr
    }
    assert not ports & listening
    for address in addresses:  # a new listener can take every port again
        host, _, port = address.rpartition(":")
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, int(port)))
            sock.listen()
    for slot in committee.workers:  # stores were closed: their LevelDB locks are free
        store = BatchStore(slot.store_dir)
        assert len(store) > 0
        store.close()


def test_hosts_that_pick_the_same_port_pick_again(ray_instance: None, tmp_path: Path) -> None:
    """Hosts on one node reserve ports independently: when two reservations clash (forced
    here by handing both hosts the first one's), the second host reserves anew, avoiding
    every port already taken."""
    pending = RayCommittee(4, 1, PARAMS, store_root=str(tmp_path), spares=False)
    hosts = [a.hosts[0] for a in pending.authorities[:2]]
    try:
        for h in hosts:
            h.actor = pending._new_actor(h.node)
        first = ray.get(hosts[0].actor.reserve.remote(hosts[0].bind, [0], True))
        distinct = pending._distinct(hosts, [first, first], timeout=30)
        assert distinct[0] == first
        ours = {first["primary"], *first["workers"][0].values()}
        again = {distinct[1]["primary"], *distinct[1]["workers"][0].values()}
        assert len(again) == 3 and not ours & again
    finally:
        for h in hosts:
            if h.actor is not None:
                ray.kill(h.actor, no_restart=True)

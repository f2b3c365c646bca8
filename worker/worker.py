"""A worker node: intake -> BatchMaker -> broadcast/QuorumWaiter -> Processor -> primary.

This is the trio shell: it owns the tasks, the payloads and the store, and drives the
sans-IO cores (BatchMaker, QuorumWaiter) with events and the trio clock. Every queue
between stages is bounded, so a stalled quorum backs up to the clients' sockets.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import trio

from metrics.exporter import MetricsServer
from metrics.worker_metrics import FAULT_KINDS, LiveCollector, WorkerMetrics
from worker.batch_maker import BatchMakerTask
from worker.config import Committee, Parameters
from worker.core.batch_maker import SealedBatch
from worker.core.faults import FaultSettings, LinkPlan
from worker.core.quorum_waiter import (
    Action,
    QuorumFailed,
    QuorumReached,
    QuorumWaiter,
    Released,
    Send,
)
from worker.intake import TransactionIntake
from worker.keys import KeyPair, short_name
from worker.primary_connector import PrimaryReporter
from worker.processor import Processor
from worker.router import EventRouter
from worker.store import BatchStore
from worker.transport.base import (
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    SendRequest,
    Transport,
)
from worker.transport.faulty import FaultyTransport
from worker.wire import messages as wire

log = logging.getLogger(__name__)

MAX_CONCURRENT_REQUESTS = 64
MAX_RECORDS = 500_000


@dataclass
class _InFlight:
    data: bytes
    digest: bytes
    sealed: SealedBatch
    request_ids: list[int] = field(default_factory=list)
    peers_sent: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class QuorumRecord:
    """One own batch that reached quorum: what the harness and the checker need."""

    digest: str
    sealed_at: float
    quorum_at: float
    transactions: int
    size: int
    reason: str
    acked_by: tuple[str, ...]
    stake: int
    samples: tuple[int, ...]


def _stake_buckets(committee: Committee) -> list[float]:
    """Buckets from the quorum threshold up to the total stake (at most ~20 of them)."""
    low, high = committee.quorum_threshold(), committee.total_stake()
    step = max(1, (high - low) // 20)
    return [float(v) for v in range(low, high + 1, step)]


def make_transport(
    committee: Committee,
    name: str,
    worker_id: int,
    params: Parameters,
    keypair: KeyPair | None,
    key_dir: Path,
) -> Transport:
    """The configured transport, listening on the committee's worker-to-worker address."""
    if params.transport == "tcp":
        from worker.transport.tcp import TcpTransport

        return TcpTransport(committee, name, worker_id, params)
    if keypair is None or keypair.name != name:
        raise ValueError("the libp2p transport needs this authority's key pair")
    from worker.transport.libp2p.transport import Libp2pTransport

    host, port = committee.worker(name, worker_id).worker_hostport
    return Libp2pTransport(
        committee, name, worker_id, params, keypair, key_dir, listen_host=host, listen_port=port
    )


def libp2p_key_dir(store_dir: str | Path) -> Path:
    """Beside the store (`<store>.libp2p`): a worker restarted on its store keeps its PeerId."""
    path = Path(store_dir)
    return path.with_name(path.name + ".libp2p")


class Worker:
    def __init__(
        self,
        committee: Committee,
        name: str,
        worker_id: int,
        params: Parameters,
        store_dir: str | Path,
        transport: Transport | None = None,
        metrics_address: tuple[str, int] | None = None,
        keypair: KeyPair | None = None,
    ) -> None:
        """`metrics_address`: serve Prometheus metrics there (port 0: any free port).
        `keypair`: the authority's keys (the libp2p handshake signs with them)."""
        if name not in committee.authorities:
            raise ValueError(f"authority {name} is not in the committee")
        self.committee, self.name, self.worker_id, self.params = committee, name, worker_id, params
        self.addresses = committee.worker(name, worker_id)
        self.store_dir = Path(store_dir)
        self.link_plan = LinkPlan()
        self.transport = FaultyTransport(
            transport
            or make_transport(
                committee,
                name,
                worker_id,
                params,
                keypair,
                self.store_dir.parent
                / "libp2p-keys"
                / f"{short_name(name).replace('/', '_')}-w{worker_id}",
            ),
            self.link_plan,
        )
        self._faults_changed = trio.Event()
        self.peers = [peer for peer, _ in committee.peer_workers(name, worker_id)]
        self._request_ids = itertools.count(time.time_ns())
        self.quorum = QuorumWaiter(
            me=name,
            stakes={n: a.stake for n, a in committee.authorities.items()},
            peers=self.peers,
            quorum_threshold=committee.quorum_threshold(),
            max_pending=params.max_pending_batches,
            retry_initial_delay=params.retry_initial_delay / 1000,
            retry_max_delay=params.retry_max_delay / 1000,
            request_timeout=params.request_timeout / 1000,
            post_quorum_delivery=params.post_quorum_delivery / 1000,
            quorum_timeout=params.quorum_timeout / 1000 or None,
            next_request_id=lambda: next(self._request_ids),
        )
        self._sealed_tx, self._sealed_rx = trio.open_memory_channel[SealedBatch](2)
        self._requests_tx, self._requests_rx = trio.open_memory_channel[RequestReceived](
            params.channel_capacity
        )
        self._own_tx, self._own_rx = trio.open_memory_channel[tuple[_InFlight, QuorumRecord]](
            math.inf
        )
        self.batch_maker = BatchMakerTask(
            params.batch_size, params.max_batch_delay / 1000, self._sealed_tx, trio.current_time
        )
        self._inflight: dict[int, _InFlight] = {}
        self._request_batch: dict[int, tuple[int, float]] = {}  # id -> (batch, sent at)
        self._batch_ids = itertools.count()
        self._changed = trio.Event()
        self.records: list[QuorumRecord] = []
        self.failures: dict[str, int] = {}
        self.unmatched_responses = 0
        self.sealed = {"size": 0, "timeout": 0}
        self.store: BatchStore | None = None
        self.processor: Processor | None = None
        self._own_pending = 0
        tx_host, tx_port = self.addresses.transactions_hostport
        self.intake = TransactionIntake(
            tx_host, tx_port, params.max_transaction_size, self._deliver
        )
        self.metrics = WorkerMetrics(short_name(name), worker_id, _stake_buckets(committee))
        self.metrics.initialize(short_name(p) for p in self.peers)
        self.metrics.add_live(
            LiveCollector(
                self.metrics.base, self._rejections, self._queue_depths,
                lambda: len(self.transport.connected_peers()),
                lambda: getattr(self.transport, "handshakes", {}),
            )
        )  # fmt: skip
        self._metrics_server = (
            MetricsServer(self.metrics.registry, *metrics_address) if metrics_address else None
        )

    # -- lifecycle ----------------------------------------------------------------------
    async def run(
        self, *, task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self.store = BatchStore(self.store_dir, sync=self.params.sync_writes)
        if self._metrics_server is not None:
            self._metrics_server.start()
        try:
            host, port = self.committee.authorities[self.name].primary.hostport
            reporter = PrimaryReporter(host, port, self.params.channel_capacity)
            self.processor = Processor(
                self.store,
                reporter,
                self.worker_id,
                self.params.max_message_size,
                self.params.max_transaction_size,
                self.metrics,
                lambda: self.link_plan.settings.byzantine,
                self._notify,
            )
            router = EventRouter(self._on_response, self._on_failure, self._requests_tx.send)
            async with trio.open_nursery() as nursery:
                address = await nursery.start(self.transport.serve)
                nursery.start_soon(reporter.run)
                nursery.start_soon(router.run, self.transport.events)
                nursery.start_soon(self._process_requests)
                nursery.start_soon(self._misbehave)
                nursery.start_soon(self._process_own)
                nursery.start_soon(self._broadcast)
                nursery.start_soon(self._tick)
                nursery.start_soon(self.batch_maker.run_timer)
                await nursery.start(self.intake.serve)
                task_status.started({"worker_to_worker": address, **self.info()})
        finally:
            if self._metrics_server is not None:
                self._metrics_server.stop()
            self.store.close()

    def info(self) -> dict[str, Any]:
        metrics = self._metrics_server.address if self._metrics_server else None
        return {
            "authority": self.name,
            "worker_id": self.worker_id,
            "transactions": self.addresses.transactions,
            "metrics": metrics,
        }

    async def _deliver(self, txs: list[bytes]) -> None:
        self.metrics.transactions.inc(len(txs))
        self.metrics.transaction_bytes.inc(sum(map(len, txs)))
        await self.batch_maker.add_many(txs)

    # -- broadcast and quorum -----------------------------------------------------------
    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _broadcast(self) -> None:
        async for sealed in self._sealed_rx:
            while not (
                self.quorum.can_submit() and self._own_pending < self.params.max_pending_batches
            ):
                await self._changed.wait()
            self.sealed[sealed.reason] += 1
            m = self.metrics
            m.child(m.created_batch_size, reason=sealed.reason).observe(sealed.size)
            m.child(m.created_batch_latency, reason=sealed.reason).observe(
                sealed.sealed_at - sealed.opened_at
            )
            data = wire.encode_batch(sealed.transactions)
            batch_id = next(self._batch_ids)
            self._inflight[batch_id] = _InFlight(data, wire.digest(data), sealed)
            self._mark_sent(self._inflight[batch_id].digest)
            self.batch_maker.submitted()
            self._apply(self.quorum.submit(batch_id, trio.current_time()))

    async def _tick(self) -> None:
        while True:
            deadline = self.quorum.next_deadline()
            with trio.move_on_at(deadline if deadline is not None else math.inf):
                await self._changed.wait()
                continue
            self._apply(self.quorum.on_tick(trio.current_time()))

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send(request_id, peer, batch_id):
                    inflight = self._inflight[batch_id]
                    inflight.request_ids.append(request_id)
                    if peer in inflight.peers_sent:
                        self.metrics.child(self.metrics.retries, peer=short_name(peer)).inc()
                    inflight.peers_sent.add(peer)
                    self._request_batch[request_id] = (batch_id, trio.current_time())
                    data = self._payload_for(inflight, peer)
                    if data is not inflight.data:
                        self._mark_sent(wire.digest(data))
                    self.transport.send(SendRequest(request_id, peer, data))
                case QuorumReached(batch_id, acked_by, stake):
                    self._quorum_reached(self._inflight[batch_id], acked_by, stake)
                case QuorumFailed(batch_id, reason):
                    self.failures[reason] = self.failures.get(reason, 0) + 1
                    self.metrics.child(self.metrics.quorum_failures, reason=reason).inc()
                case Released(batch_id, _delivered):
                    inflight = self._inflight.pop(batch_id)
                    for rid in inflight.request_ids:
                        self._request_batch.pop(rid, None)
        self.metrics.in_flight.set(self.quorum.awaiting_quorum)
        # Even an empty answer may have scheduled a retry: the tick task re-reads deadlines.
        self._notify()

    def _payload_for(self, inflight: _InFlight, peer: str) -> bytes:
        byz = self.link_plan.settings.byzantine
        if byz.corrupt == "malformed":
            return b"\xc1" + inflight.data[1:]
        if byz.equivocate and self.peers.index(peer) >= len(self.peers) // 2:
            return wire.encode_batch([*inflight.sealed.transactions, b"\x01equivocation"])
        return inflight.data

    # -- faults ---------------------------------------------------------------------------
    def set_faults(self, settings: FaultSettings) -> None:
        """Apply a fault configuration now (an empty one restores an honest, healthy worker)."""
        self.link_plan.settings = settings
        active = settings.active_kinds()
        for kind in FAULT_KINDS:
            self.metrics.child(self.metrics.faults_active, kind=kind).set(kind in active)
        self._faults_changed.set()
        self._faults_changed = trio.Event()

    async def _misbehave(self) -> None:
        """Flooding and replay, while the settings ask for them."""
        replayed = 0
        while True:
            byz = self.link_plan.settings.byzantine
            if not (byz.flood or byz.replay):
                await self._faults_changed.wait()
                continue
            with trio.move_on_after(1 / byz.flood if byz.flood else 0.2):
                await self._faults_changed.wait()
            for peer in self.peers:
                if byz.flood:
                    junk = b"\x93\x01\x00" + bytes(64)  # a batch whose body is not an array
                    self.transport.inner.send(SendRequest(next(self._request_ids), peer, junk))
                if byz.replay and self.records:
                    record = self.records[replayed % len(self.records)]
                    data = self.store.get(bytes.fromhex(record.digest)) if self.store else None
                    if data is not None:
                        self.transport.send(SendRequest(next(self._request_ids), peer, data))
            replayed += 1

    def _quorum_reached(self, inflight: _InFlight, acked_by: tuple[str, ...], stake: int) -> None:
        sealed, now, wall = inflight.sealed, trio.current_time(), time.time()
        record = QuorumRecord(
            digest=inflight.digest.hex(),
            sealed_at=wall - (now - sealed.sealed_at),
            quorum_at=wall,
            transactions=len(sealed.transactions),
            size=sealed.size,
            reason=sealed.reason,
            acked_by=acked_by,
            stake=stake,
            samples=tuple(counter for counter, _ in sealed.samples),
        )
        m = self.metrics
        m.quorum_latency.observe(now - sealed.sealed_at)
        m.quorum_stake.observe(stake)
        m.quorum_batches.inc()
        m.quorum_transactions.inc(record.transactions)
        m.quorum_bytes.inc(record.size)
        for _, sent_at in sealed.samples:
            if sent_at:
                m.sample_latency.observe(max(0.0, wall - sent_at))
        self._own_pending += 1
        self._own_tx.send_nowait((inflight, record))

    def _on_response(self, event: ResponseReceived) -> None:
        found = self._request_batch.get(event.request_id)
        if found is None:
            self.unmatched_responses += 1
            return
        batch_id, sent_at = found
        try:
            msg = wire.decode(event.data, 4096)
        except wire.WireError:
            msg = None
        accepted = isinstance(msg, wire.Ack) and (
            msg.digest == self._inflight[batch_id].digest
            or self.link_plan.settings.byzantine.equivocate  # takes any ack as its own
        )
        now, peer, m = trio.current_time(), short_name(event.peer), self.metrics
        if accepted:
            m.child(m.acks, peer=peer).inc()
            m.child(m.ack_latency, peer=peer).observe(now - sent_at)
        else:
            m.child(m.request_failures, peer=peer, reason="rejected").inc()
        self._apply(self.quorum.on_response(event.request_id, event.peer, accepted, now))

    def _on_failure(self, event: RequestFailed) -> None:
        peer = short_name(event.peer)
        self.metrics.child(self.metrics.request_failures, peer=peer, reason="transport").inc()
        self._apply(self.quorum.on_failure(event.request_id, event.peer, trio.current_time()))

    # -- processing -----------------------------------------------------------------------
    async def _process_requests(self) -> None:
        """One task per request (bounded), so a slow store or a slow ack holds up no other."""
        assert self.processor is not None
        limiter = trio.CapacityLimiter(MAX_CONCURRENT_REQUESTS)
        async with trio.open_nursery() as nursery:
            async for event in self._requests_rx:
                await limiter.acquire_on_behalf_of(event)
                nursery.start_soon(self._process_one, event, limiter)

    async def _process_one(self, event: RequestReceived, limiter: trio.CapacityLimiter) -> None:
        assert self.processor is not None
        try:
            await self.processor.handle_request(event)
        finally:
            limiter.release_on_behalf_of(event)

    async def _process_own(self) -> None:
        assert self.processor is not None
        async for inflight, record in self._own_rx:
            await self.processor.handle_own(inflight.digest, inflight.data)
            if len(self.records) < MAX_RECORDS:
                self.records.append(record)
            self._own_pending -= 1
            self._notify()

    # -- observation ------------------------------------------------------------------------
    def _rejections(self) -> dict[str, Counter[str]]:
        out = {"transport": self.transport.rejections, "intake": self.intake.rejections}
        if self.processor is not None:
            out["processor"] = self.processor.rejections
        return out

    def _queue_depths(self) -> dict[str, int]:
        depth = {
            "sealed": self._sealed_rx.statistics().current_buffer_used,
            "inbound_requests": self._requests_rx.statistics().current_buffer_used,
            "own_to_store": self._own_pending,
            "transport_events": self.transport.events.statistics().current_buffer_used,
        }
        if self.processor is not None:
            depth["primary_reports"] = self.processor.reporter.queued
        return depth

    def idle(self) -> bool:
        """Nothing sealed or awaiting quorum or storage (post-quorum delivery may go on)."""
        return (
            self.batch_maker.core.pending_size == 0
            and self.batch_maker.unsubmitted == 0
            and self.quorum.awaiting_quorum == 0
            and self._own_pending == 0
        )

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; re-checked after every pipeline step."""
        while not predicate():
            await self._changed.wait()

    async def wait_idle(self) -> None:
        # Every step towards idle ends in `_notify`: the timer's seal is only taken
        # by `_broadcast`, whose submit notifies.
        await self.wait_for(self.idle)

    def stats(self) -> dict[str, Any]:
        proc = self.processor
        return {
            **self.info(),
            "transactions_received": self.batch_maker.transactions,
            "batches_sealed": dict(self.sealed),
            "batches_quorum": len(self.records),
            "quorum_failures": dict(self.failures),
            "awaiting_quorum": self.quorum.awaiting_quorum,
            "tracked": self.quorum.tracked,
            "persisted": dict(proc.persisted) if proc else {},
            "rejections": {
                "transport": dict(self.transport.rejections),
                "processor": dict(proc.rejections) if proc else {},
                "intake": dict(self.intake.rejections),
            },
            "unmatched_responses": self.unmatched_responses,
        }

    def _mark_sent(self, digest: bytes) -> None:
        assert self.store is not None
        self.store.mark_sent(digest)

    def sent_digests(self) -> set[str]:
        """Every digest this worker ever put on the wire, across restarts (hex)."""
        assert self.store is not None and not self.store.closed
        return {d.hex() for d in self.store.sent_digests()}

    def stored_digests(self) -> dict[str, bool]:
        """Every stored digest (hex) -> whether the stored bytes hash to it."""
        assert self.store is not None and not self.store.closed
        return {key.hex(): wire.digest(value) == key for key, value in self.store.items()}

    def records_json(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.records]

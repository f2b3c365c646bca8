"""A worker: intake -> batch maker -> broadcaster -> processor -> primary connector.

`Worker.run` wires the data path in one place: the channels are named after where they
go, one task per stage (each in its own module, driving a sans-IO core from
worker/core), and the transport's events are dispatched by `Dispatch`, inline in the
transport's reader tasks where it offers that. Every
channel between stages is bounded except the one into the processor for own batches,
which the broadcaster bounds itself, so a stalled quorum backs up to the clients'
sockets. The `Worker` class is the facade a driver uses (see docs/architecture.md).
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import trio

from metrics.exporter import MetricsServer
from metrics.worker_metrics import LiveCollector, WorkerMetrics
from worker.allocator import keep_freed_memory
from worker.batch_maker import BatchMakerTask
from worker.broadcaster import Backlog, Broadcaster, OwnBatch, quorum_waiter
from worker.changes import Changes
from worker.config import Committee, Parameters
from worker.core.batch_maker import SealedBatch
from worker.core.faults import Byzantine, FaultSettings, LinkPlan
from worker.core.records import QuorumRecord, Records
from worker.dispatch import Dispatch
from worker.gil import share_gil_promptly
from worker.impersonator import impersonate
from worker.intake import TransactionIntake
from worker.keys import KeyPair, short_name
from worker.misbehaviour import Misbehaviour
from worker.primary_connector import PrimaryConnector
from worker.processor import Processor
from worker.store import BatchStore
from worker.store_writer import StoreWriter
from worker.transport.base import (
    RequestReceived,
    Transport,
)
from worker.transport.factory import libp2p_key_dir, make_transport
from worker.transport.faulty import FaultyTransport
from worker.wire import messages as wire
from worker.wire.reports import Report
from worker.wire.transactions import TxRun

__all__ = ["Dispatch", "Worker", "libp2p_key_dir", "make_transport"]


def _stake_buckets(committee: Committee) -> list[float]:
    """Buckets from the quorum threshold up to the total stake (at most ~20 of them)."""
    low, high = committee.quorum_threshold(), committee.total_stake()
    step = max(1, (high - low) // 20)
    return [float(v) for v in range(low, high + 1, step)]


class Worker:
    def __init__(
        self,
        committee: Committee,
        name: str,
        worker_id: int,
        params: Parameters,
        store_dir: str | Path,
        *,
        transport: Transport | None = None,
        metrics_address: tuple[str, int] | None = None,
        keypair: KeyPair | None = None,
        store_factory: Callable[[Path, bool], BatchStore] = BatchStore,
    ) -> None:
        """`metrics_address`: serve Prometheus metrics there (port 0: any free port).
        `keypair`: the authority's keys (the libp2p handshake and the primary link sign
        with them). `store_factory(path, sync)`: opens the batch store (tests inject
        one that blocks, to watch the persist-then-ack ordering)."""
        if name not in committee.authorities:
            raise ValueError(f"authority {name} is not in the committee")
        self.committee, self.name, self.worker_id, self.params = committee, name, worker_id, params
        self.addresses = committee.worker(name, worker_id)
        self.store_dir = Path(store_dir)
        self._keypair = keypair
        self._store_factory = store_factory
        self.link_plan = LinkPlan()
        self._network = transport or make_transport(
            committee, name, worker_id, params, keypair, libp2p_key_dir(self.store_dir)
        )
        self.transport = FaultyTransport(self._network, self.link_plan)
        self.peers = [peer for peer, _ in committee.peer_workers(name, worker_id)]
        self.changes, self._faults_changed = Changes(), Changes()
        self.records = Records()
        self.metrics = WorkerMetrics(short_name(name), worker_id, _stake_buckets(committee))
        self.metrics.initialize(short_name(p) for p in self.peers)
        self.metrics.add_live(
            LiveCollector(
                self.metrics.base,
                self._rejections,
                self.queue_depths,
                lambda: len(self.transport.connected_peers()),
                lambda: self.transport.handshakes,
            )
        )
        self._metrics_server = (
            MetricsServer(
                self.metrics.registry,
                *metrics_address,
                max_connections=params.max_metrics_connections,
            )
            if metrics_address
            else None
        )
        self._address: str | None = None
        self.store: BatchStore | None = None
        self.intake: TransactionIntake | None = None
        self.batch_maker: BatchMakerTask | None = None
        self.broadcaster: Broadcaster | None = None
        self.processor: Processor | None = None
        self.connector: PrimaryConnector | None = None
        self._backlog = Backlog()
        self._queues: dict[str, trio.MemoryReceiveChannel[Any]] = {}

    # -- the data path ------------------------------------------------------------------
    async def run(
        self, *, task_status: trio.TaskStatus[dict[str, Any]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        p, m, changes = self.params, self.metrics, self.changes
        keep_freed_memory()  # the process hosts a worker: its buffers churn (allocator.py)
        share_gil_promptly()  # and its loop shares the GIL with helper threads (gil.py)
        self.store = store = self._store_factory(self.store_dir, p.sync_writes)
        request_ids = itertools.count(time.time_ns())
        backlog = Backlog()
        behaviour = self._behaviour
        # Intake: clients' transactions, batch-ready runs of them per socket read.
        to_batch_maker, from_intake = trio.open_memory_channel[list[TxRun]](0)
        tx_host, tx_port = self.addresses.transactions_hostport
        intake = TransactionIntake(tx_host, tx_port, p.max_transaction_size, to_batch_maker, p)
        # Batch maker: chunks into sealed batches, by size or on the batch timer.
        to_broadcaster, from_batch_maker = trio.open_memory_channel[SealedBatch](2)
        batch_maker = BatchMakerTask(
            p.batch_size, p.max_batch_delay / 1000, from_intake, to_broadcaster, m
        )
        # Broadcaster: each batch to every peer until a stake quorum acked it.
        to_processor_own, from_broadcaster = trio.open_memory_channel[
            tuple[OwnBatch, QuorumRecord]
        ](math.inf)
        broadcaster = Broadcaster(
            quorum_waiter(self.committee, self.name, self.peers, p, lambda: next(request_ids)),
            self.peers,
            p.max_pending_batches,
            self.transport,
            from_batch_maker,
            to_processor_own,
            batch_maker.taken,
            store.mark_sent,
            behaviour,
            m,
            changes,
            backlog,
        )
        # Processor: peers' batches (stored, reported, then acked) and ours at quorum.
        to_processor, from_dispatch = trio.open_memory_channel[RequestReceived](p.channel_capacity)
        to_primary, from_processor = trio.open_memory_channel[Report](p.channel_capacity)
        store_writer = StoreWriter(store)
        processor = Processor(
            store_writer,
            self.worker_id,
            p.max_message_size,
            p.max_transaction_size,
            from_dispatch,
            from_broadcaster,
            to_primary,
            m,
            behaviour,
            changes,
            backlog,
            self.records,
            max_transactions=p.max_batch_transactions,
            min_transaction_size=p.min_transaction_size,
            digest_in_thread=p.digest_in_thread,
        )
        # Primary connector: the processor's reports to this authority's primary.
        primary_host, primary_port = self.committee.authorities[self.name].primary.hostport
        connector = PrimaryConnector(
            primary_host,
            primary_port,
            from_processor,
            changes,
            keypair=self._keypair,
            worker_id=self.worker_id,
            delivered=lambda done: store_writer.reports_delivered((r.kind, r.digest) for r in done),
        )
        # Misbehaviour: flooding and replay, while the fault settings ask for them.
        misbehaviour = Misbehaviour(
            self.peers,
            behaviour,
            self._faults_changed,
            self._network,
            self.transport,
            store,
            self.records,
            request_ids,
        )
        self.intake, self.batch_maker, self.broadcaster = intake, batch_maker, broadcaster
        self.processor, self.connector = processor, connector
        self._backlog, self._queues = (
            backlog,
            {
                "sealed": from_batch_maker,
                "inbound_requests": from_dispatch,
            },
        )
        if self._metrics_server is not None:
            self._metrics_server.start()
        try:
            async with trio.open_nursery() as nursery:
                self._address = await nursery.start(self.transport.serve)
                dispatch = Dispatch(
                    broadcaster, to_processor, processor.rejections, self.transport.admit
                )
                self.transport.deliver_inline(dispatch)
                nursery.start_soon(dispatch.run, self.transport.events)
                for stage in (connector, processor, misbehaviour, broadcaster, batch_maker):
                    nursery.start_soon(stage.run)
                await nursery.start(intake.serve)
                task_status.started(self.info())
        finally:
            if self._metrics_server is not None:
                self._metrics_server.stop()
            store.close()
            changes.notify()

    def _behaviour(self) -> Byzantine:
        return self.link_plan.settings.byzantine

    # -- discovery -----------------------------------------------------------------------
    @property
    def peer_id(self) -> str | None:
        return self.transport.peer_id

    def add_peer_addrs(self, addrs: Mapping[str, str]) -> None:
        self.transport.add_peer_addrs({p: a for p, a in addrs.items() if p != self.name})

    async def wait_discovery(self, expected: set[str]) -> dict[str, str]:
        return await self.transport.wait_discovery(set(expected) - {self.name})

    # -- faults ------------------------------------------------------------------------
    def set_faults(self, settings: FaultSettings) -> None:
        """Apply a fault configuration now (an empty one restores an honest, healthy worker)."""
        self.link_plan.settings = settings
        self.metrics.show_faults(settings.active_kinds())
        self._faults_changed.notify()

    async def impersonate(self, victim: str, peer_addrs: Mapping[str, str]) -> dict[str, Any]:
        """An extra host of this (Byzantine) authority claims to be `victim` to the peers."""
        own = self._keypair or KeyPair.generate()
        key_dir = self.store_dir.with_name(self.store_dir.name + ".impostor")
        host = self.addresses.transactions_hostport[0]
        return await impersonate(
            self.committee, victim, self.worker_id, self.params, own, key_dir, host, peer_addrs
        )

    # -- observation ---------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        metrics = self._metrics_server.address if self._metrics_server else None
        out = {
            "authority": self.name,
            "worker_id": self.worker_id,
            "transactions": self.addresses.transactions,
            "metrics": metrics,
            "peer_id": self.peer_id,
        }
        if self._address is not None:
            out["worker_to_worker"] = self._address
        return out

    def progress(self) -> dict[str, int]:
        proc, conn = self.processor, self.connector
        return {
            "transactions_received": self.batch_maker.transactions if self.batch_maker else 0,
            "batches_quorum": len(self.records),
            "persisted": sum(proc.persisted.values()) if proc else 0,
            "reports_sent": conn.sent if conn else 0,
            "reports_queued": conn.queued if conn else 0,
        }

    def idle(self) -> bool:
        """Nothing sealed or awaiting quorum or storage (post-quorum delivery may go on)."""
        bm, bc = self.batch_maker, self.broadcaster
        if bm is None or bc is None:
            return True
        return (
            bm.core.pending_size == 0
            and bm.unsubmitted == 0
            and bc.quorum.awaiting_quorum == 0
            and self._backlog.count == 0
        )

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; re-checked after every pipeline step."""
        await self.changes.wait_until(predicate)

    async def wait_idle(self) -> None:
        # Every step towards idle notifies: the timer's seal is only taken by the
        # broadcaster, whose submit notifies.
        await self.wait_for(self.idle)

    async def flush_reports(self, timeout: float) -> int:
        """Return once every report of a stored batch went out to the primary (or after
        `timeout`); the number of reports sent."""
        proc, conn = self.processor, self.connector
        if proc is None or conn is None:
            return 0
        with trio.move_on_after(timeout):
            await self.wait_for(lambda: conn.sent >= proc.reported and conn.queued == 0)
        return conn.sent

    def stats(self) -> dict[str, Any]:
        proc, bc = self.processor, self.broadcaster
        return {
            **self.info(),
            "transactions_received": self.batch_maker.transactions if self.batch_maker else 0,
            "batches_sealed": dict(bc.sealed) if bc else {"size": 0, "timeout": 0},
            "batches_quorum": len(self.records),
            "quorum_failures": dict(bc.failures) if bc else {},
            "awaiting_quorum": bc.quorum.awaiting_quorum if bc else 0,
            "tracked": bc.quorum.tracked if bc else 0,
            "persisted": dict(proc.persisted) if proc else {},
            "rejections": {k: dict(v) for k, v in self._rejections().items()},
            "unmatched_responses": bc.unmatched_responses if bc else 0,
            # group commit: batches stored, and the synced writes that carried them
            "store_writes": (
                {"batches": proc.store.writes, "commits": proc.store.commits} if proc else {}
            ),
        }

    def records_json(self) -> list[dict[str, Any]]:
        return self.records.to_json()

    @property
    def store_closed(self) -> bool:
        return self.store is None or self.store.closed

    def stored_count(self) -> int:
        return len(self._open_store())

    def sent_digests(self) -> set[str]:
        """Every digest this worker ever put on the wire, across restarts (hex)."""
        return {d.hex() for d in self._open_store().sent_digests()}

    def stored_digests(self) -> dict[str, bool]:
        """Every stored digest (hex) -> whether the stored bytes hash to it."""
        items = self._open_store().items()
        return {key.hex(): wire.digest(value) == key for key, value in items}

    def evidence(self) -> dict[str, Any]:
        """What the scenario checker needs from this worker."""
        return {
            "authority": self.name,
            "worker_id": self.worker_id,
            "records": self.records_json(),
            "stored": self.stored_digests(),
            "sent": sorted(self.sent_digests()),
        }

    def _open_store(self) -> BatchStore:
        if self.store is None or self.store.closed:
            raise RuntimeError("the worker's store is not open (not running)")
        return self.store

    def _rejections(self) -> dict[str, Counter[str]]:
        out = {"transport": self.transport.rejections}
        out["intake"] = self.intake.rejections if self.intake else Counter()
        out["processor"] = self.processor.rejections if self.processor else Counter()
        return out

    def queue_depths(self) -> dict[str, int]:
        queues = {"transport_events": self.transport.events, **self._queues}
        depth = {name: q.statistics().current_buffer_used for name, q in queues.items()}
        depth["own_to_store"] = self._backlog.count
        if self.connector is not None:
            depth["primary_reports"] = self.connector.queued
        return depth

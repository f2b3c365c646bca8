"""Broadcaster: sealed batches out to every peer, acks in, quorum batches on to the processor.

Drives the QuorumWaiter core (worker/core/quorum_waiter.py): a sealed batch is encoded,
submitted, and every `Send` it answers becomes a request on the transport; acks and
failures come back from the worker's dispatch (`on_response`, `on_failure`) and the
timer task feeds `on_tick` at the core's next deadline. A batch at quorum goes to the
processor with its record. What to send a peer and which acks to take are the fault
policy's decisions (worker/core/faults.py), carried out here.

Submission waits while the core is full or `max_pending_batches` quorum batches are
not yet stored: together with the bounded channels, memory stays bounded.
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from metrics.worker_metrics import WorkerMetrics
from worker.changes import Changes
from worker.config import Committee, Parameters
from worker.core.batch_maker import SealedBatch
from worker.core.faults import Byzantine, accepts_ack, outgoing_batch
from worker.core.quorum_waiter import (
    Action,
    QuorumFailed,
    QuorumReached,
    QuorumWaiter,
    Released,
    Send,
)
from worker.core.records import QuorumRecord
from worker.keys import short_name
from worker.transport.base import RequestFailed, ResponseReceived, SendRequest, Transport
from worker.wire import messages as wire


def quorum_waiter(
    committee: Committee,
    me: str,
    peers: list[str],
    params: Parameters,
    next_request_id: Callable[[], int],
) -> QuorumWaiter:
    """The QuorumWaiter core for authority `me`, with the timings of `params` (ms -> s)."""
    return QuorumWaiter(
        me=me,
        stakes={n: a.stake for n, a in committee.authorities.items()},
        peers=peers,
        quorum_threshold=committee.quorum_threshold(),
        max_pending=params.max_pending_batches,
        retry_initial_delay=params.retry_initial_delay / 1000,
        retry_max_delay=params.retry_max_delay / 1000,
        request_timeout=params.request_timeout / 1000,
        post_quorum_delivery=params.post_quorum_delivery / 1000,
        quorum_timeout=params.quorum_timeout / 1000 or None,
        next_request_id=next_request_id,
    )


@dataclass
class OwnBatch:
    """One of our batches between sealing and release; the processor stores `data`."""

    data: bytes
    digest: bytes
    sealed: SealedBatch
    request_ids: list[int] = field(default_factory=list)
    peers_sent: set[str] = field(default_factory=set)


@dataclass
class Backlog:
    """Own batches at quorum that the processor has not stored yet."""

    count: int = 0


class Broadcaster:
    def __init__(
        self,
        quorum: QuorumWaiter,
        peers: list[str],
        max_pending: int,
        transport: Transport,
        from_batch_maker: trio.MemoryReceiveChannel[SealedBatch],
        to_processor: trio.MemorySendChannel[tuple[OwnBatch, QuorumRecord]],
        taken: Callable[[], None],
        mark_sent: Callable[[bytes], None],
        behaviour: Callable[[], Byzantine],
        metrics: WorkerMetrics,
        changes: Changes,
        backlog: Backlog,
    ) -> None:
        self.quorum = quorum
        self.peers = peers
        self._max_pending = max_pending
        self._transport = transport
        self._from_batch_maker = from_batch_maker
        self._to_processor = to_processor
        self._taken = taken
        self._mark_sent = mark_sent
        self._behaviour = behaviour
        self._metrics = metrics
        self._changes = changes
        self._backlog = backlog
        self._batch_ids = itertools.count()
        self.inflight: dict[int, OwnBatch] = {}
        self._request_batch: dict[int, tuple[int, float]] = {}  # id -> (batch, sent at)
        self.sealed = {"size": 0, "timeout": 0}
        self.failures: dict[str, int] = {}
        self.unmatched_responses = 0
        self._tick_scope: trio.CancelScope | None = None  # the tick task's sleep

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._tick)
            async for sealed in self._from_batch_maker:
                await self._changes.wait_until(self._can_submit)
                self._submit(sealed)

    # -- from the dispatch ------------------------------------------------------------
    def on_response(self, event: ResponseReceived) -> None:
        found = self._request_batch.get(event.request_id)
        if found is None:
            self.unmatched_responses += 1
            return
        batch_id, sent_at = found
        try:
            msg = wire.decode(event.data, 4096)
        except wire.WireError:
            msg = None
        acked = msg.digest if isinstance(msg, wire.Ack) else None
        accepted = accepts_ack(self._behaviour(), acked, self.inflight[batch_id].digest)
        now, peer, m = trio.current_time(), short_name(event.peer), self._metrics
        if accepted:
            m.child(m.acks, peer=peer).inc()
            m.child(m.ack_latency, peer=peer).observe(now - sent_at)
        else:
            m.child(m.request_failures, peer=peer, reason="rejected").inc()
        self._apply(self.quorum.on_response(event.request_id, event.peer, accepted, now))

    def on_failure(self, event: RequestFailed) -> None:
        peer = short_name(event.peer)
        self._metrics.child(self._metrics.request_failures, peer=peer, reason="transport").inc()
        self._apply(self.quorum.on_failure(event.request_id, event.peer, trio.current_time()))

    # -- the loop ---------------------------------------------------------------------
    def _can_submit(self) -> bool:
        return self.quorum.can_submit() and self._backlog.count < self._max_pending

    def _submit(self, sealed: SealedBatch) -> None:
        self.sealed[sealed.reason] += 1
        m = self._metrics
        m.child(m.created_batch_size, reason=sealed.reason).observe(sealed.size)
        m.child(m.created_batch_latency, reason=sealed.reason).observe(
            sealed.sealed_at - sealed.opened_at
        )
        data = sealed.data
        batch_id = next(self._batch_ids)
        self.inflight[batch_id] = batch = OwnBatch(data, wire.digest(data), sealed)
        self._mark_sent(batch.digest)
        self._taken()
        self._apply(self.quorum.submit(batch_id, trio.current_time()))

    async def _tick(self) -> None:
        """Feed `on_tick` at the core's next deadline. It sleeps until then; `_apply`
        only moves its wake-up earlier when an answer scheduled an earlier deadline (no
        wake-up per ack just to re-read the deadline)."""
        while True:
            with trio.CancelScope() as scope:
                self._tick_scope = scope
                deadline = self.quorum.next_deadline()
                scope.deadline = deadline if deadline is not None else math.inf
                await trio.sleep_forever()
            self._tick_scope = None
            self._apply(self.quorum.on_tick(trio.current_time()))

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case Send(request_id, peer, batch_id):
                    self._request_batch[request_id] = (batch_id, trio.current_time())
                    self._send(request_id, peer, self.inflight[batch_id])
                case QuorumReached(batch_id, acked_by, stake):
                    self._reached(self.inflight[batch_id], acked_by, stake)
                case QuorumFailed(_, reason):
                    self.failures[reason] = self.failures.get(reason, 0) + 1
                    self._metrics.child(self._metrics.quorum_failures, reason=reason).inc()
                case Released(batch_id, _):
                    for request_id in self.inflight.pop(batch_id).request_ids:
                        self._request_batch.pop(request_id, None)
        self._metrics.in_flight.set(self.quorum.awaiting_quorum)
        # Even an empty answer may have scheduled a retry: wake the tick task earlier.
        scope = self._tick_scope
        if scope is not None:
            deadline = self.quorum.next_deadline()
            if deadline is not None and deadline < scope.deadline:
                scope.deadline = deadline
        self._changes.notify()

    def _send(self, request_id: int, peer: str, batch: OwnBatch) -> None:
        batch.request_ids.append(request_id)
        if peer in batch.peers_sent:
            self._metrics.child(self._metrics.retries, peer=short_name(peer)).inc()
        batch.peers_sent.add(peer)
        data = outgoing_batch(
            self._behaviour(), batch.data, self.peers.index(peer), len(self.peers)
        )
        if data is not batch.data:
            self._mark_sent(wire.digest(data))
        self._transport.send(SendRequest(request_id, peer, data))

    def _reached(self, batch: OwnBatch, acked_by: tuple[str, ...], stake: int) -> None:
        sealed, now, wall = batch.sealed, trio.current_time(), time.time()
        record = QuorumRecord.of(sealed, batch.digest, acked_by, stake, now=now, wall=wall)
        m = self._metrics
        m.quorum_latency.observe(now - sealed.sealed_at)
        m.quorum_stake.observe(stake)
        m.quorum_batches.inc()
        m.quorum_transactions.inc(record.transactions)
        m.quorum_bytes.inc(record.size)
        for _, sent_at in sealed.samples:
            if sent_at:
                m.sample_latency.observe(max(0.0, wall - sent_at))
        self._backlog.count += 1
        self._to_processor.send_nowait((batch, record))

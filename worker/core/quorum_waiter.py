"""Sans-IO QuorumWaiter: broadcast a batch to the peers and wait for a stake quorum of acks.

Kept free of I/O and clocks so every interleaving of acks, rejects, failures and timeouts
can be replayed deterministically in tests; the shell turns `Send` into network traffic and
calls `on_tick` at `next_deadline()`. Behaviour follows the later Narwhal worker (pipelined
batches, best-effort delivery after quorum) plus the libp2p descendant's fail-fast
"anti-quorum"; see the reference notes for the original's choices.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Send:
    """The shell must send batch `batch_id`'s payload to `peer`, tagged with `request_id`."""

    request_id: int
    peer: str
    batch_id: int


@dataclass(frozen=True, slots=True)
class QuorumReached:
    """Emitted once per batch; `stake` is own stake plus the stake of `acked_by`."""

    batch_id: int
    acked_by: tuple[str, ...]
    stake: int


@dataclass(frozen=True, slots=True)
class QuorumFailed:
    """Emitted at most once per batch, never after QuorumReached."""

    batch_id: int
    reason: str  # "anti_quorum" or "timeout"


@dataclass(frozen=True, slots=True)
class Released:
    """The batch is no longer tracked at all; the shell may drop its payload."""

    batch_id: int
    delivered_to: tuple[str, ...]


Action = Send | QuorumReached | QuorumFailed | Released

_NO_TIMER = -1


@dataclass(slots=True)
class _Peer:
    rid: int  # latest request id; older ones stay mapped so a late ack still counts
    in_flight: bool = True  # False while backing off before a retry
    failures: int = 0
    answered: bool = False
    timer: int = _NO_TIMER  # seq of this peer's live heap entry


@dataclass(slots=True)
class _Batch:
    id: int
    stake: int
    reachable: int  # own stake + stake of every peer not rejected: the best we can still get
    unanswered: int
    peers: dict[str, _Peer] = field(default_factory=dict)
    rids: list[int] = field(default_factory=list)
    acked: list[str] = field(default_factory=list)
    reached: bool = False
    timer: int = _NO_TIMER  # quorum timeout while awaiting, end of delivery window after


class QuorumWaiter:
    """Tracks every in-flight batch; timers live in one heap with lazy invalidation.

    Each heap entry is `(when, seq, batch_id, peer | None)` and is live only while the
    owning peer's (or batch's) `timer` still equals its `seq`, so cancelling is O(1):
    overwrite or clear the `timer` field and let the stale entry be skipped later.
    """

    def __init__(
        self,
        *,
        me: str,
        stakes: Mapping[str, int],
        peers: Sequence[str],
        quorum_threshold: int,
        max_pending: int,
        retry_initial_delay: float,
        retry_max_delay: float,
        request_timeout: float,
        post_quorum_delivery: float,
        quorum_timeout: float | None,
        next_request_id: Callable[[], int],
    ) -> None:
        if me not in stakes:
            raise ValueError(f"own name {me!r} is not in the committee stakes")
        if me in peers or len(set(peers)) != len(peers):
            raise ValueError("peers must be distinct and must not include me")
        if max_pending < 1 or request_timeout <= 0 or retry_initial_delay <= 0:
            raise ValueError("max_pending, request_timeout and retry_initial_delay must be > 0")
        if retry_max_delay < retry_initial_delay or post_quorum_delivery < 0:
            raise ValueError("need retry_max_delay >= retry_initial_delay, delivery window >= 0")
        if quorum_timeout is not None and quorum_timeout <= 0:
            raise ValueError("quorum_timeout must be > 0 or None")
        self._own = stakes[me]
        self._stakes = {p: max(0, stakes.get(p, 0)) for p in peers}  # unknown peers weigh 0
        self._peers = tuple(peers)
        self._threshold = quorum_threshold
        self._max_pending = max_pending
        self._retry_initial = retry_initial_delay
        self._retry_max = retry_max_delay
        self._request_timeout = request_timeout
        self._window = post_quorum_delivery
        self._quorum_timeout = quorum_timeout
        self._next_rid = next_request_id
        self._batches: dict[int, _Batch] = {}
        self._post: dict[int, None] = {}  # batches past quorum, oldest first
        self._rids: dict[int, tuple[int, str]] = {}  # request id -> (batch id, peer)
        self._heap: list[tuple[float, int, int, str | None]] = []
        self._seq = 0
        self._compact_at = 1024

    @property
    def awaiting_quorum(self) -> int:
        return len(self._batches) - len(self._post)

    @property
    def tracked(self) -> int:
        return len(self._batches)

    def can_submit(self) -> bool:
        return self.awaiting_quorum < self._max_pending

    def submit(self, batch_id: int, now: float) -> list[Action]:
        """Start broadcasting; quorum may already hold on own stake alone (committee of 1)."""
        if not self.can_submit():
            raise RuntimeError(f"{self._max_pending} batches already await quorum")
        if batch_id in self._batches:
            raise ValueError(f"batch {batch_id} is already tracked")
        reachable = self._own + sum(self._stakes.values())
        b = _Batch(batch_id, self._own, reachable, unanswered=len(self._peers))
        self._batches[batch_id] = b
        actions: list[Action] = []
        if self._quorum_timeout is not None:
            b.timer = self._schedule(now + self._quorum_timeout, batch_id, None)
        # Same check as after every answer: also fails fast if `peers` can never make quorum.
        actions += self._check(b, now)
        if batch_id in self._batches:
            for peer in self._peers:
                b.peers[peer] = _Peer(rid=0)
                actions.append(self._send(b, peer, now))
        return actions

    def on_response(self, request_id: int, peer: str, accepted: bool, now: float) -> list[Action]:
        """Count the first answer of each peer; anything else (dupes, spoofs) is ignored."""
        found = self._lookup(request_id, peer)
        if found is None or found[1].answered:
            return []
        b, p = found
        p.answered, p.timer = True, _NO_TIMER
        b.unanswered -= 1
        if accepted:
            b.acked.append(peer)
            if not b.reached:
                b.stake += self._stakes[peer]
        elif not b.reached:
            b.reachable -= self._stakes[peer]
        return self._check(b, now)

    def on_failure(self, request_id: int, peer: str, now: float) -> list[Action]:
        """Back off and retry; a failure of a superseded request changes nothing."""
        found = self._lookup(request_id, peer)
        if found is None:
            return []
        b, p = found
        if not p.answered and p.in_flight and p.rid == request_id:
            self._back_off(b, peer, p, now)
        return []

    def on_tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        while self._heap and self._heap[0][0] <= now:
            entry = heapq.heappop(self._heap)
            b = self._live(entry)
            if b is None:
                continue
            peer = entry[3]
            if peer is None:
                if b.reached:
                    actions += self._release(b)
                else:
                    actions += [QuorumFailed(b.id, "timeout"), *self._release(b)]
            elif b.peers[peer].in_flight:  # no answer within request_timeout: a failure
                self._back_off(b, peer, b.peers[peer], now)
            else:
                actions.append(self._send(b, peer, now))
        return actions

    def next_deadline(self) -> float | None:
        while self._heap and self._live(self._heap[0]) is None:
            heapq.heappop(self._heap)
        return self._heap[0][0] if self._heap else None

    # -- internals -------------------------------------------------------------------------

    def _lookup(self, request_id: int, peer: str) -> tuple[_Batch, _Peer] | None:
        """None for unknown ids and for answers from a peer the id was not sent to."""
        target = self._rids.get(request_id)
        if target is None or target[1] != peer:
            return None
        b = self._batches[target[0]]
        return b, b.peers[peer]

    def _check(self, b: _Batch, now: float) -> list[Action]:
        if not b.reached:
            if b.stake >= self._threshold:
                return self._reach(b, now)
            if b.reachable < self._threshold:
                return [QuorumFailed(b.id, "anti_quorum"), *self._release(b)]
            return []
        return self._release(b) if b.unanswered == 0 else []

    def _reach(self, b: _Batch, now: float) -> list[Action]:
        b.reached = True
        actions: list[Action] = [QuorumReached(b.id, tuple(b.acked), b.stake)]
        if self._window == 0 or b.unanswered == 0:
            return actions + self._release(b)
        b.timer = self._schedule(now + self._window, b.id, None)
        self._post[b.id] = None
        while len(self._post) > self._max_pending:  # memory bound: drop the oldest deliveries
            actions += self._release(self._batches[next(iter(self._post))])
        return actions

    def _release(self, b: _Batch) -> list[Action]:
        del self._batches[b.id]
        self._post.pop(b.id, None)
        for rid in b.rids:
            del self._rids[rid]
        return [Released(b.id, tuple(b.acked))]

    def _send(self, b: _Batch, peer: str, now: float) -> Send:
        rid = self._next_rid()
        self._rids[rid] = (b.id, peer)
        b.rids.append(rid)
        p = b.peers[peer]
        p.rid, p.in_flight = rid, True
        p.timer = self._schedule(now + self._request_timeout, b.id, peer)
        return Send(rid, peer, b.id)

    def _back_off(self, b: _Batch, peer: str, p: _Peer, now: float) -> None:
        # Exponent capped: a dead peer fails for hours and 2**1100 would overflow a float.
        delay = min(self._retry_initial * 2 ** min(p.failures, 60), self._retry_max)
        p.failures += 1
        p.in_flight = False
        p.timer = self._schedule(now + delay, b.id, peer)

    def _schedule(self, when: float, batch_id: int, peer: str | None) -> int:
        if len(self._heap) >= self._compact_at:  # stale entries pile up under heavy load
            self._heap = [e for e in self._heap if self._live(e) is not None]
            heapq.heapify(self._heap)
            self._compact_at = max(1024, 2 * len(self._heap))
        self._seq += 1  # compact first: the caller only marks this new entry live afterwards
        heapq.heappush(self._heap, (when, self._seq, batch_id, peer))
        return self._seq

    def _live(self, entry: tuple[float, int, int, str | None]) -> _Batch | None:
        _, seq, batch_id, peer = entry
        b = self._batches.get(batch_id)
        if b is None:
            return None
        timer = b.timer if peer is None else b.peers[peer].timer
        return b if timer == seq else None

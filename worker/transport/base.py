"""The transport interface every implementation honours (shaped like the seed design).

Peers are named by their authority's committee name (base64 ed25519 key): a worker
only talks to the same-id worker of each other authority, so the name is enough.
Commands go in through `send`; everything that happens comes out of `events`, which
the worker's wiring dispatches (worker/worker.py). Peer failures never raise out of a
transport: they become `RequestFailed` events, or counted rejections.

Discovery is a declared capability, not something to probe for: every transport has
`peer_id`, `add_peer_addrs` and `wait_discovery`. A transport that dials the
committee's addresses (TCP, the in-memory one) keeps the defaults below: no PeerId,
nothing to learn, discovery complete at once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import trio

PeerName = str
Respond = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class SendRequest:
    request_id: int
    target: PeerName
    data: bytes


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    request_id: int
    peer: PeerName
    data: bytes


@dataclass(frozen=True, slots=True)
class RequestReceived:
    peer: PeerName
    data: bytes
    respond: Respond = field(repr=False)


@dataclass(frozen=True, slots=True)
class RequestFailed:
    request_id: int
    peer: PeerName
    error: str


TransportEvent = ResponseReceived | RequestReceived | RequestFailed


class Transport(ABC):
    """What the worker needs from a transport."""

    #: Events for the worker's dispatch, in arrival order per peer.
    events: trio.MemoryReceiveChannel[TransportEvent]
    #: Refused inbound traffic by reason code (oversized, malformed_frame, unknown_peer, ...).
    rejections: Counter[str]
    #: Peer introductions by result: "accepted" or the reason one was refused.
    handshakes: Counter[str]

    @abstractmethod
    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and run until cancelled; `task_status.started(address)` once listening."""

    @abstractmethod
    def send(self, request: SendRequest) -> None:
        """Queue a request without blocking on the target peer; its outcome is an event."""

    @abstractmethod
    def connected_peers(self) -> set[PeerName]:
        """Peers with a live link right now."""

    def deliver_inline(self, sink: Callable[[TransportEvent], None]) -> bool:
        """Hand requests and responses to `sink` in the reader task that parsed them
        instead of queueing them on `events` (failures still go to `events`), saving a
        task hop per message; `sink` must not block or raise. False: not supported."""
        del sink
        return False

    # -- discovery (defaults: the committee's addresses are all there is to know) -------
    @property
    def peer_id(self) -> str | None:
        """This host's network identity (a libp2p PeerId, base58), if it has one."""
        return None

    def add_peer_addrs(self, addrs: Mapping[PeerName, str]) -> None:
        """Learn where peers listen (authority -> address reported by its worker)."""
        del addrs

    async def wait_discovery(self, expected: set[PeerName]) -> dict[PeerName, str]:
        """Return once every `expected` peer can be reached; their PeerIds (if any)."""
        del expected
        return {}

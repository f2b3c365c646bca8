"""The transport interface every implementation honours (shaped like the seed design).

Peers are named by their authority's committee name (base64 ed25519 key): a worker
only talks to the same-id worker of each other authority, so the name is enough.
Commands go in through `send`; everything that happens comes out of `events`, which
the event router (worker/router.py) dispatches. Peer failures never raise out of a
transport: they become `RequestFailed` events, or counted rejections.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

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


class Transport(Protocol):
    """What the worker needs from a transport."""

    #: Events for the router, in arrival order per peer.
    events: trio.MemoryReceiveChannel[TransportEvent]
    #: Refused inbound traffic by reason code (oversized, malformed, unknown_peer, ...).
    rejections: Counter[str]

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen and run until cancelled; `task_status.started(address)` once listening."""

    def send(self, request: SendRequest) -> None:
        """Queue a request without blocking on the target peer; its outcome is an event."""

    def connected_peers(self) -> set[PeerName]:
        """Peers with a live link right now."""

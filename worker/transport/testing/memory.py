"""An in-memory transport: the worker-to-worker contract without sockets (like trio's
`memory_stream_pair`), for logic tests of the worker shell.

Transports of one `MemoryNetwork` reach each other while their `serve` runs. A request
to a peer that is not serving fails at once (as a refused TCP connect does); stopping
a transport fails every request outstanding to it, and the answers it still gives to
requesters that left are dropped (counted as "respond_failed"). Requests are tracked
with the same bookkeeping and timeout policy as the real transports
(worker/core/requests.py).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

import trio

from worker.core.requests import RequestTable, expiry_period
from worker.transport.base import (
    PeerName,
    RequestFailed,
    RequestReceived,
    Respond,
    ResponseReceived,
    SendRequest,
    Transport,
    TransportEvent,
)


class MemoryNetwork:
    """Where in-memory transports find each other, by authority name."""

    def __init__(self) -> None:
        self.serving: dict[PeerName, MemoryTransport] = {}


class MemoryTransport(Transport):
    def __init__(
        self,
        network: MemoryNetwork,
        me: PeerName,
        peers: Iterable[PeerName],
        *,
        max_payload: int = 1 << 30,
        request_timeout: float = 10.0,
    ) -> None:
        self.me = me
        self.rejections: Counter[str] = Counter()
        self.handshakes: Counter[str] = Counter()
        self._network = network
        self._max_payload = max_payload
        self._timeout = request_timeout
        self._outstanding: dict[PeerName, RequestTable[None]] = {
            peer: RequestTable(request_timeout) for peer in peers if peer != me
        }
        self._events_tx, self.events = trio.open_memory_channel[TransportEvent](math.inf)
        self._served = False

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        if self._served or self.me in self._network.serving:
            raise RuntimeError(f"{self.me[:8]} already serves on this network")
        self._served = True
        self._network.serving[self.me] = self
        try:
            task_status.started(f"memory:{self.me}")
            while True:
                await trio.sleep(expiry_period(self._timeout))
                now = trio.current_time()
                for peer, table in self._outstanding.items():
                    for request_id in table.expire(now):
                        self._emit(RequestFailed(request_id, peer, "timeout"))
        finally:
            del self._network.serving[self.me]
            for other in list(self._network.serving.values()):
                other._lost(self.me)
            for peer in self._outstanding:
                self._lost(peer)

    def send(self, request: SendRequest) -> None:
        table = self._outstanding.get(request.target)
        peer = self._network.serving.get(request.target)
        if table is None:
            self._fail(request, "unknown peer")
        elif len(request.data) > self._max_payload:
            self._fail(request, "request larger than max_message_size")
        elif peer is None or self._network.serving.get(self.me) is not self:
            self._fail(request, "unreachable")
        elif not table.add(request.request_id, trio.current_time(), None):
            self._fail(request, "duplicate_request_id")
        else:
            peer._receive(self, request)

    def connected_peers(self) -> set[PeerName]:
        if self._network.serving.get(self.me) is not self:
            return set()
        return {peer for peer in self._outstanding if peer in self._network.serving}

    # -- between transports -------------------------------------------------------------
    def _receive(self, requester: MemoryTransport, request: SendRequest) -> None:
        respond = self._responder(requester, request.request_id)
        self._emit(RequestReceived(requester.me, request.data, respond))

    def _responder(self, requester: MemoryTransport, request_id: int) -> Respond:
        async def respond(data: bytes) -> None:
            await trio.lowlevel.checkpoint()
            table = requester._outstanding.get(self.me)
            if len(data) > self._max_payload or table is None or table.pop(request_id) is None:
                self.rejections["respond_failed"] += 1  # gone, timed out, or answered
                return
            requester._emit(ResponseReceived(request_id, self.me, data))

        return respond

    def _lost(self, peer: PeerName) -> None:
        """`peer` stopped (or we did): what we asked it will never be answered."""
        table = self._outstanding.get(peer)
        if table is not None:
            for request_id in sorted(table.take_all()):
                self._emit(RequestFailed(request_id, peer, "connection lost"))

    def _fail(self, request: SendRequest, error: str) -> None:
        self._emit(RequestFailed(request.request_id, request.target, error))

    def _emit(self, event: TransportEvent) -> None:
        self._events_tx.send_nowait(event)

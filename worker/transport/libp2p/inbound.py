"""The batch protocol, the peer's side: its requests in, our answers out.

Bounds are per authority, not per stream: an admitted member could otherwise open any
number of batch streams, each with its own bound (6 streams queued 6x the documented
bound). Each authority has one inbound batch stream at a time: a newer one replaces the
older (the peer redialed, so the older is dead or dying), which is reset and counted
`batch_stream_replaced`. Its unanswered requests count against one budget of
`channel_capacity`, whatever stream they came on.

A stream whose answer writer fails is reset at once, like one whose reader fails: the
peer then fails its outstanding requests and redials, instead of having its requests
stored and reported while every answer is silently dropped. A peer that only half-closes
(FIN) after its last request still gets the answers it is owed, then our FIN.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Iterable

import trio
from libp2p.abc import INetStream

from worker.core.requests import RequestTable
from worker.transport.base import PeerName, RequestReceived, Respond, TransportEvent
from worker.transport.libp2p.framing import (
    Frame,
    FrameError,
    Kind,
    StreamClosed,
    encode_frame,
    read_frames,
    tagged_header,
)
from worker.transport.libp2p.host import reset_quietly
from worker.transport.libp2p.link import FrameWriter

Emit = Callable[[TransportEvent], None]


class InboundBudget:
    """Unanswered requests of one authority, across all its streams.

    A request stops counting once answered, or after `timeout` (its sender has failed it
    by then), so a worker that never answers (a silent Byzantine one) does not lock its
    peer out forever once it turns honest again."""

    def __init__(self, capacity: int, timeout: float) -> None:
        self.capacity = capacity
        self._table: RequestTable[None] = RequestTable(timeout)
        self._tokens = itertools.count()
        #: The most ever unanswered at once (the bound tests assert on).
        self.peak = 0

    def take(self) -> int | None:
        """A token for one more unanswered request, or None past the capacity."""
        now = trio.current_time()
        self._table.expire(now)
        if len(self._table) >= self.capacity:
            return None
        token = next(self._tokens)
        self._table.add(token, now, None)
        self.peak = max(self.peak, len(self._table))
        return token

    def give_back(self, token: int) -> None:
        self._table.pop(token)

    def __len__(self) -> int:
        return len(self._table)


class InboundStreams:
    """Every authority's current inbound batch stream and its request budget."""

    def __init__(
        self,
        emit: Emit,
        rejections: Counter[str],
        stats: Counter[str],
        *,
        max_payload: int,
        capacity: int,
        timeout: float,
        write_timeout: float,
    ) -> None:
        self._emit, self._rejections, self._stats = emit, rejections, stats
        self._write_timeout = write_timeout
        self._max_payload, self._capacity, self._timeout = max_payload, capacity, timeout
        self._current: dict[PeerName, trio.CancelScope] = {}
        self._live: Counter[PeerName] = Counter()  # streams being served, replaced ones too
        self._budgets: dict[PeerName, InboundBudget] = {}

    def budget(self, peer: PeerName) -> InboundBudget:
        budget = self._budgets.get(peer)
        if budget is None:
            budget = self._budgets[peer] = InboundBudget(self._capacity, self._timeout)
        return budget

    def bounds(self, peers: Iterable[PeerName]) -> dict[str, dict[PeerName, int]]:
        """Streams served per authority now (one, once a replaced one has wound down),
        unanswered requests now and at most."""
        peers = list(peers)
        return {
            "inbound_streams": {peer: n for peer, n in self._live.items() if n},
            "unanswered": {peer: len(self.budget(peer)) for peer in peers},
            "unanswered_peak": {peer: self.budget(peer).peak for peer in peers},
        }

    async def serve(self, stream: INetStream, peer: PeerName) -> None:
        """Serve `stream` as `peer`'s batch stream, replacing any older one."""
        scope = trio.CancelScope()
        older = self._current.get(peer)
        self._current[peer] = scope
        self._live[peer] += 1
        if older is not None:
            self._rejections["batch_stream_replaced"] += 1
            older.cancel()
        finished = False
        try:
            with scope:
                finished = await self._serve(stream, peer)
        finally:
            self._live[peer] -= 1
            if self._current.get(peer) is scope:
                del self._current[peer]
            if not finished:
                with trio.CancelScope(shield=True):
                    await reset_quietly(stream)

    async def _serve(self, stream: INetStream, peer: PeerName) -> bool:
        """Each request becomes a `RequestReceived` at once; answers are queued to a writer
        task, so neither a slow router nor a slow peer ever stops this reader. Past the
        authority's budget the peer gets an ERROR frame ("overloaded").

        A peer that half-closes (FIN) after its requests still gets every answer owed
        (for at most `request_timeout`), then our FIN: True. Otherwise (a bad frame, a
        failed read or write, a replacement) the caller resets the stream."""
        budget = self.budget(peer)
        writer = FrameWriter(lambda: len(budget) > 0)
        max_payload = self._max_payload

        def responder(request_id: int, token: int) -> Respond:
            answered = False

            async def respond(data: bytes) -> None:
                nonlocal answered
                if answered:
                    return
                answered = True
                budget.give_back(token)
                if len(data) > max_payload:
                    writer.put(encode_frame(Kind.ERROR, request_id, b"oversized_response"))
                else:
                    writer.put(tagged_header(Kind.RESPONSE, request_id, len(data)), data)

            return respond

        def on_request(frame: Frame) -> None:
            if frame.kind is not Kind.REQUEST:
                raise FrameError("malformed_frame", f"{frame.kind.name} on a request stream")
            token = budget.take()
            if token is None:
                self._rejections["overloaded"] += 1
                writer.put(encode_frame(Kind.ERROR, frame.request_id, b"overloaded"))
            else:
                self._emit(RequestReceived(peer, frame.payload, responder(frame.request_id, token)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write, writer, stream, nursery.cancel_scope)
            try:
                await read_frames(stream, max_payload, on_request)
                with trio.move_on_after(self._timeout):  # the peer half-closed
                    await writer.drain(lambda: len(budget) > 0)
                    await stream.close()
                    return True
                return False
            except FrameError as exc:
                self._rejections[exc.reason] += 1
            except StreamClosed:
                pass
            finally:
                nursery.cancel_scope.cancel()
                writer.close()
        return False

    async def _write(
        self, writer: FrameWriter, stream: INetStream, scope: trio.CancelScope
    ) -> None:
        """A stream we cannot answer on is lost for reading too: stop the reader."""
        try:
            await writer.run(stream, self._write_timeout)
        except StreamClosed:
            self._stats["answer_write_failed"] += 1
            scope.cancel()

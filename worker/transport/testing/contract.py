"""The behaviour every worker-to-worker transport owes the worker, whatever its wire.

Written only against `worker.transport.base`, so the TCP baseline, the libp2p transport
and the in-memory one (worker/transport/testing/memory.py) are held to the same suite.
To run it against an implementation, subclass `TransportContract` in a test module (the
subclass name must start with `Test`) and give it a `make_cluster` fixture: a callable
`make_cluster(n)` returning an async context manager that yields a running
`TransportCluster` of n authorities (worker id 0) of a fresh committee. `serve_cluster`
builds one for any transport whose `serve` runs until
cancelled, from a `build(index) -> Transport`::

    class TestMyContract(TransportContract):
        @pytest.fixture
        def make_cluster(self, make_committee) -> MakeCluster:
            @asynccontextmanager
            async def factory(n: int) -> AsyncIterator[TransportCluster]:
                committee, keys = make_committee(n)
                names = [k.name for k in keys]
                async with serve_cluster(names, lambda i: MyTransport(...)) as cluster:
                    yield cluster
            return factory
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

import trio

from worker.keys import KeyPair
from worker.transport.base import (
    RequestFailed,
    RequestReceived,
    ResponseReceived,
    SendRequest,
    Transport,
    TransportEvent,
)

#: Guards every wait so a broken transport fails the test instead of hanging it.
#: Never used to synchronise: tests wait for events.
TIMEOUT = 10.0

E = TypeVar("E", ResponseReceived, RequestReceived, RequestFailed)


class TransportCluster(Protocol):
    """Transports of one committee, indexed like `names`; workers can be stopped and restarted."""

    names: list[str]

    def __getitem__(self, index: int) -> Transport:
        """The running transport of worker `index`."""

    async def start(self, index: int) -> Transport:
        """Start a fresh transport for worker `index`; returns once it is listening."""

    async def stop(self, index: int) -> None:
        """Stop worker `index`; returns once its sockets are closed."""


MakeCluster = Callable[[int], AbstractAsyncContextManager[TransportCluster]]


@dataclass
class _Member:
    transport: Transport
    scope: trio.CancelScope
    done: trio.Event


class ServeCluster:
    """A `TransportCluster` for transports whose `serve` runs until cancelled."""

    def __init__(
        self, nursery: trio.Nursery, names: list[str], build: Callable[[int], Transport]
    ) -> None:
        self.names = names
        self.addresses: dict[int, str] = {}
        self._nursery = nursery
        self._build = build
        self._members: dict[int, _Member] = {}

    def __getitem__(self, index: int) -> Transport:
        return self._members[index].transport

    async def start(self, index: int) -> Transport:
        assert index not in self._members, f"worker {index} is already running"
        transport = self._build(index)
        worker = _Member(transport, trio.CancelScope(), trio.Event())

        async def run(task_status: trio.TaskStatus[str]) -> None:
            try:
                with worker.scope:
                    await transport.serve(task_status=task_status)
            finally:
                worker.done.set()

        self.addresses[index] = await self._nursery.start(run)
        self._members[index] = worker
        return transport

    async def stop(self, index: int) -> None:
        worker = self._members.pop(index)
        worker.scope.cancel()
        await worker.done.wait()


@asynccontextmanager
async def serve_cluster(
    names: list[str], build: Callable[[int], Transport], running: Iterable[int] | None = None
) -> AsyncIterator[ServeCluster]:
    """Run `build(i)` for every worker in `running` (default: all) until the block ends."""
    async with trio.open_nursery() as nursery:
        cluster = ServeCluster(nursery, names, build)
        for index in range(len(names)) if running is None else running:
            await cluster.start(index)
        yield cluster
        nursery.cancel_scope.cancel()


# -- helpers --------------------------------------------------------------------------
async def next_event(transport: Transport) -> TransportEvent:
    with trio.fail_after(TIMEOUT):
        return await transport.events.receive()


async def expect(transport: Transport, kind: type[E]) -> E:
    event = await next_event(transport)
    assert isinstance(event, kind), f"expected {kind.__name__}, got {event!r}"
    return event


async def round_trip(cluster: TransportCluster, src: int, dst: int, request_id: int) -> None:
    """One request from src answered by dst, checking both ends see the other's name."""
    a, b = cluster[src], cluster[dst]
    a.send(SendRequest(request_id, cluster.names[dst], b"ping %d" % request_id))
    request = await expect(b, RequestReceived)
    assert (request.peer, request.data) == (cluster.names[src], b"ping %d" % request_id)
    await request.respond(b"pong %d" % request_id)
    response = await expect(a, ResponseReceived)
    assert response == ResponseReceived(request_id, cluster.names[dst], b"pong %d" % request_id)


def _payload(request_id: int) -> bytes:
    size = 500_000 if request_id % 2 else 1_000
    return request_id.to_bytes(4, "big") * (size // 4)


def _answer(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


class TransportContract:
    """Mixin of contract tests; needs a `make_cluster` fixture (see the module docstring)."""

    async def test_round_trip(self, make_cluster: MakeCluster) -> None:
        async with make_cluster(2) as cluster:
            await round_trip(cluster, 0, 1, request_id=7)
            assert cluster.names[1] in cluster[0].connected_peers()
            await round_trip(cluster, 1, 0, request_id=7)  # ids are per requester

    async def test_empty_payloads_round_trip(self, make_cluster: MakeCluster) -> None:
        async with make_cluster(2) as cluster:
            a, b = cluster[0], cluster[1]
            a.send(SendRequest(1, cluster.names[1], b""))
            request = await expect(b, RequestReceived)
            assert request.data == b""
            await request.respond(b"")
            assert await expect(a, ResponseReceived) == ResponseReceived(1, cluster.names[1], b"")

    async def test_request_names_its_sender(self, make_cluster: MakeCluster) -> None:
        """The broadcaster attributes acks (and stake) by this name, so it must be the sender's."""
        async with make_cluster(3) as cluster:
            for src in (0, 2):
                cluster[src].send(SendRequest(1, cluster.names[1], cluster.names[src].encode()))
            requests = [await expect(cluster[1], RequestReceived) for _ in range(2)]
            assert {r.peer for r in requests} == {cluster.names[0], cluster.names[2]}
            for request in requests:
                assert request.data == request.peer.encode()
                await request.respond(b"ack")
            for src in (0, 2):
                response = await expect(cluster[src], ResponseReceived)
                assert response == ResponseReceived(1, cluster.names[1], b"ack")

    async def test_pipelined_requests_matched_when_answered_in_reverse(
        self, make_cluster: MakeCluster
    ) -> None:
        n_requests = 200
        async with make_cluster(2) as cluster:
            a, b = cluster[0], cluster[1]
            answers: dict[int, bytes] = {}

            async def answer_in_reverse() -> None:
                requests = [await expect(b, RequestReceived) for _ in range(n_requests)]
                assert all(r.data == _payload(int.from_bytes(r.data[:4], "big")) for r in requests)
                for request in reversed(requests):
                    await request.respond(_answer(request.data))

            async def collect() -> None:
                for _ in range(n_requests):
                    response = await expect(a, ResponseReceived)
                    assert response.peer == cluster.names[1]
                    assert response.request_id not in answers
                    answers[response.request_id] = response.data

            async with trio.open_nursery() as nursery:
                nursery.start_soon(answer_in_reverse)
                nursery.start_soon(collect)
                for request_id in range(1, n_requests + 1):
                    a.send(SendRequest(request_id, cluster.names[1], _payload(request_id)))
            assert answers == {rid: _answer(_payload(rid)) for rid in range(1, n_requests + 1)}

    async def test_request_to_stopped_peer_fails(self, make_cluster: MakeCluster) -> None:
        async with make_cluster(2) as cluster:
            await cluster.stop(1)
            cluster[0].send(SendRequest(5, cluster.names[1], b"anyone?"))
            failed = await expect(cluster[0], RequestFailed)
            assert (failed.request_id, failed.peer) == (5, cluster.names[1])
            assert cluster.names[1] not in cluster[0].connected_peers()

    async def test_peer_death_fails_outstanding_then_restart_serves(
        self, make_cluster: MakeCluster
    ) -> None:
        outstanding = [11, 12, 13, 14, 15]
        async with make_cluster(2) as cluster:
            a, name_b = cluster[0], cluster.names[1]
            for request_id in outstanding:
                a.send(SendRequest(request_id, name_b, b"never answered"))
            for _ in outstanding:  # all delivered, none answered: truly outstanding
                await expect(cluster[1], RequestReceived)
            await cluster.stop(1)
            failures = [await expect(a, RequestFailed) for _ in outstanding]
            assert sorted(f.request_id for f in failures) == outstanding
            assert {f.peer for f in failures} == {name_b}

            await cluster.start(1)
            await round_trip(cluster, 0, 1, request_id=16)

    async def test_inline_delivery_bypasses_events(self, make_cluster: MakeCluster) -> None:
        """With a sink, a request and its answer reach the sinks (not `events`); a failure
        still comes out of `events`."""
        async with make_cluster(2) as cluster:
            got: list[list[TransportEvent]] = [[], []]
            arrived = [trio.Event(), trio.Event()]

            def sink(i: int) -> Callable[[TransportEvent], None]:
                def take(event: TransportEvent) -> None:
                    got[i].append(event)
                    arrived[i].set()

                return take

            if not (cluster[0].deliver_inline(sink(0)) and cluster[1].deliver_inline(sink(1))):
                import pytest

                pytest.skip("this transport has no inline delivery")
            cluster[0].send(SendRequest(1, cluster.names[1], b"ping"))
            with trio.fail_after(TIMEOUT):
                await arrived[1].wait()
            [request] = got[1]
            assert isinstance(request, RequestReceived)
            assert (request.peer, request.data) == (cluster.names[0], b"ping")
            await request.respond(b"pong")
            with trio.fail_after(TIMEOUT):
                await arrived[0].wait()
            assert got[0] == [ResponseReceived(1, cluster.names[1], b"pong")]
            stranger = KeyPair.generate().name
            cluster[0].send(SendRequest(2, stranger, b"x"))
            failed = await expect(cluster[0], RequestFailed)
            assert (failed.request_id, failed.peer) == (2, stranger)
            assert cluster[1].events.statistics().current_buffer_used == 0

    async def test_unknown_target_fails(self, make_cluster: MakeCluster) -> None:
        async with make_cluster(2) as cluster:
            stranger = KeyPair.generate().name
            cluster[0].send(SendRequest(3, stranger, b"x"))
            failed = await expect(cluster[0], RequestFailed)
            assert (failed.request_id, failed.peer) == (3, stranger)
            await round_trip(cluster, 0, 1, request_id=4)

    async def test_late_response_to_departed_requester_is_harmless(
        self, make_cluster: MakeCluster
    ) -> None:
        async with make_cluster(3) as cluster:
            cluster[0].send(SendRequest(1, cluster.names[1], b"then I leave"))
            request = await expect(cluster[1], RequestReceived)
            await cluster.stop(0)
            await request.respond(b"too late")  # must neither raise nor wedge the responder
            await round_trip(cluster, 2, 1, request_id=2)

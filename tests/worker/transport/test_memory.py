"""The in-memory transport against the transport contract (no sockets)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from tests.conftest import MakeCommittee
from worker.transport.base import RequestFailed, SendRequest
from worker.transport.testing.contract import (
    MakeCluster,
    TransportCluster,
    TransportContract,
    expect,
    serve_cluster,
)
from worker.transport.testing.memory import MemoryNetwork, MemoryTransport


class TestMemoryContract(TransportContract):
    @pytest.fixture
    def make_cluster(self, make_committee: MakeCommittee) -> MakeCluster:
        @asynccontextmanager
        async def factory(n: int) -> AsyncIterator[TransportCluster]:
            _, keys = make_committee(n)
            names = [k.name for k in keys]
            network = MemoryNetwork()
            async with serve_cluster(
                names, lambda i: MemoryTransport(network, names[i], names)
            ) as cluster:
                yield cluster

        return factory


async def test_unanswered_requests_time_out(autojump_clock: trio.abc.Clock) -> None:
    network = MemoryNetwork()
    names = ["a", "b"]

    def build(i: int) -> MemoryTransport:
        return MemoryTransport(network, names[i], names, request_timeout=2.0)

    async with serve_cluster(names, build) as cluster:
        cluster[0].send(SendRequest(1, "b", b"never answered"))
        failed = await expect(cluster[0], RequestFailed)
        assert (failed.request_id, failed.error) == (1, "timeout")
        assert trio.current_time() >= 2.0

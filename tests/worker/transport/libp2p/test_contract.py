"""The libp2p transport against the transport-agnostic contract (tests/transport_contract.py).

Workers listen on their committee worker_to_worker port with a PeerId kept in a per-worker
key directory, so a restarted worker comes back on the same multiaddr, as in a deployment.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.worker.transport.libp2p.support import cluster, plan
from worker.transport.testing.contract import MakeCluster, TransportCluster, TransportContract


class TestLibp2pContract(TransportContract):
    @pytest.fixture
    def make_cluster(self, tmp_path: Path) -> MakeCluster:
        @asynccontextmanager
        async def factory(n: int) -> AsyncIterator[TransportCluster]:
            async with cluster(plan(n, tmp_path)) as c:
                yield c

        return factory

"""Starting workers (LevelDB in temp dirs) with their collectors, in-process.

By default workers talk over the in-memory transport (logic tests: no worker-to-worker
sockets); `memory=False` uses the configured transport on loopback.
"""

from __future__ import annotations

import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import trio

from cluster.committee import make_local_committee
from primary.digest_collector import DigestCollector
from worker.config import Committee, Parameters
from worker.keys import KeyPair
from worker.store import BatchStore
from worker.transport.testing.memory import MemoryNetwork, MemoryTransport
from worker.worker import Worker

TEST_PARAMS = Parameters(
    batch_size=10_000,
    max_batch_delay=20,
    max_pending_batches=4,
    retry_initial_delay=20,
    retry_max_delay=200,
    request_timeout=5_000,
    post_quorum_delivery=1_000,
    max_message_size=1 << 20,
    max_transaction_size=4096,
    sync_writes=False,
    transport="tcp",
)


@dataclass
class Authority:
    name: str
    worker: Worker | None = None
    info: dict | None = None
    collector: DigestCollector | None = None
    cancel: trio.CancelScope | None = None


class Cluster:
    """A committee whose authorities can be started and stopped one by one."""

    def __init__(
        self,
        nursery: trio.Nursery,
        committee: Committee,
        keys: list[KeyPair],
        root: Path,
        params: Parameters,
        memory: bool = True,
    ) -> None:
        self.nursery, self.committee, self.keys, self.root = nursery, committee, keys, root
        self.params = params
        self.network = MemoryNetwork() if memory else None
        self.authorities = [Authority(k.name) for k in keys]
        #: Per authority index: how its worker opens its store (default: BatchStore).
        self.store_factories: dict[int, Callable[[Path, bool], BatchStore]] = {}

    async def start(self, index: int, metrics: bool = False, collector: bool = True) -> Authority:
        """Start authority `index` (its collector unless `collector=False`)."""
        auth = self.authorities[index]
        scope = trio.CancelScope()
        auth.cancel = scope
        host, port = self.committee.authorities[auth.name].primary.hostport
        auth.collector = DigestCollector(host, port, authority=auth.name)
        auth.worker = Worker(
            self.committee,
            auth.name,
            0,
            self.params,
            self.root / f"a{index}",
            transport=self._transport(auth.name),
            metrics_address=("127.0.0.1", 0) if metrics else None,
            keypair=self.keys[index],
            store_factory=self.store_factories.get(index, BatchStore),
        )

        async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                async with trio.open_nursery() as inner:
                    if collector:
                        await inner.start(auth.collector.serve)
                    auth.info = await inner.start(auth.worker.run)
                    task_status.started()

        await self.nursery.start(run)
        return auth

    def _transport(self, name: str) -> MemoryTransport | None:
        if self.network is None:
            return None
        return MemoryTransport(
            self.network,
            name,
            self.committee.authorities,
            max_payload=self.params.max_message_size,
            request_timeout=self.params.request_timeout / 1000,
        )

    def stop(self, index: int) -> None:
        auth = self.authorities[index]
        if auth.cancel is not None:
            auth.cancel.cancel()


@asynccontextmanager
async def cluster(
    tmp_path: Path,
    n: int = 4,
    params: Parameters = TEST_PARAMS,
    start: int | None = None,
    memory: bool = True,
) -> AsyncIterator[Cluster]:
    committee, keys = make_local_committee(n, 1)
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, committee, keys, tmp_path, params, memory)
        for i in range(n if start is None else start):
            await c.start(i)
        yield c
        nursery.cancel_scope.cancel()


def transactions(count: int, size: int = 100, first: int = 0) -> bytes:
    """`count` length-prefixed transactions; every 10th is a sample."""
    out = bytearray()
    for i in range(first, first + count):
        kind = 0 if i % 10 == 0 else 1
        out += struct.pack(">IBQ", size, kind, i) + bytes(size - 9)
    return bytes(out)


async def send_transactions(address: str, payload: bytes) -> None:
    host, _, port = address.rpartition(":")
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(payload)

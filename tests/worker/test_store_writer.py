"""Group commit (worker/store_writer.py) on a real LevelDB: batches that arrive while a
write is in flight share the next synced write, and no `put` returns before the write
that holds its batch returned."""

from __future__ import annotations

import threading
from collections.abc import Iterable
from pathlib import Path

import plyvel
import pytest
import trio

from worker.store import BatchStore, Write
from worker.store_writer import StoreUnavailable, StoreWriter


class GatedStore(BatchStore):
    """Records every write; the first one waits until `release` is set."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.entered, self.release = threading.Event(), threading.Event()
        self.groups: list[list[bytes]] = []
        self.log: list[str] = []  # "wrote <d>" and (from the test) "returned <d>"
        self.fail = False

    def put_many(self, writes: Iterable[Write], delivered: Iterable = ()) -> None:
        writes = list(writes)
        if writes and not self.entered.is_set():
            self.entered.set()
            self.release.wait()
        if self.fail and writes:
            raise plyvel.IOError("IO error: disk full")
        super().put_many(writes, delivered)
        if writes:
            self.groups.append([d for d, _, _ in writes])
            self.log += [f"wrote {d.hex()}" for d, _, _ in writes]


def digest(i: int) -> bytes:
    return bytes([i]) * 32


async def _put(writer: StoreWriter, store: GatedStore, i: int) -> None:
    await writer.put(digest(i), b"batch %d" % i, 1)
    store.log.append(f"returned {digest(i).hex()}")


async def test_batches_arriving_during_a_write_share_the_next_one(tmp_path: Path) -> None:
    store = GatedStore(tmp_path)
    writer = StoreWriter(store)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            nursery.start_soon(_put, writer, store, 0)
            await trio.to_thread.run_sync(store.entered.wait)  # the first write is in flight
            async with trio.open_nursery() as puts:
                for i in (1, 2, 3):
                    puts.start_soon(_put, writer, store, i)
                await trio.testing.wait_all_tasks_blocked()
                assert writer.queued == 3 and not any(e.startswith("returned") for e in store.log)
                store.release.set()
            nursery.cancel_scope.cancel()
        assert [set(g) for g in store.groups] == [{digest(0)}, {digest(1), digest(2), digest(3)}]
        assert (writer.writes, writer.commits) == (4, 2)
        for i in range(4):  # persisted, then returned: for every batch of a group
            assert store.log.index(f"wrote {digest(i).hex()}") < store.log.index(
                f"returned {digest(i).hex()}"
            )
        assert {d for _, d in store.pending_reports()} == {digest(i) for i in range(4)}
    finally:
        store.release.set()
        store.close()


async def test_a_refused_group_fails_every_put_in_it_and_the_next_may_succeed(
    tmp_path: Path,
) -> None:
    store = GatedStore(tmp_path)
    store.entered.set()  # no gate
    writer = StoreWriter(store)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            store.fail = True
            with pytest.raises(StoreUnavailable):
                await writer.put(digest(1), b"x", 1)
            store.fail = False
            await writer.put(digest(2), b"y", 1)
            nursery.cancel_scope.cancel()
        assert store.get(digest(1)) is None and store.get(digest(2)) == b"y"
    finally:
        store.close()


async def test_delivered_reports_are_forgotten_without_waiting(tmp_path: Path) -> None:
    store = BatchStore(tmp_path)
    writer = StoreWriter(store)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            await writer.put(digest(1), b"x", 1)
            await writer.put(digest(2), b"y", 0)
            writer.reports_delivered([(1, digest(1))])  # returns at once
            await writer.put(digest(3), b"z")  # the deletion went with this write or before
            assert store.pending_reports() == [(0, digest(2))]
            nursery.cancel_scope.cancel()
    finally:
        store.close()


def test_sent_digests_survive_a_reopen_even_with_a_cut_record(tmp_path: Path) -> None:
    store = BatchStore(tmp_path)
    store.mark_sent(digest(1))
    store.mark_sent(digest(2))
    store.close()
    with open(tmp_path / "sent.log", "ab") as log:
        log.write(b"\x07" * 5)  # a crash in the middle of a record
    store = BatchStore(tmp_path)
    try:
        assert list(store.sent_digests()) == [digest(1), digest(2)]
    finally:
        store.close()


async def test_confirmed_reports_are_forgotten_when_the_writer_stops(tmp_path: Path) -> None:
    """A stop within DELIVERED_LINGER of a confirmation must not leave the report pending
    (a restart would send it again)."""
    store = BatchStore(tmp_path)
    writer = StoreWriter(store)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            await writer.put(digest(1), b"batch 1", 1)
            await writer.put(digest(2), b"batch 2", 1)
            writer.reports_delivered([(1, digest(1))])
            nursery.cancel_scope.cancel()  # well within the linger
        assert store.pending_reports() == [(1, digest(2))]
    finally:
        store.close()

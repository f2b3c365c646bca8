"""The batch store: bodies in the value log, locators and reports in LevelDB."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import mmap
import os
from pathlib import Path

import plyvel
import pytest

from worker import vectored
from worker.store import MIN_LOGGED_BODY, VALUE_LOG, BatchStore
from worker.value_log import HEADER, CorruptValueLog, ValueLog
from worker.wire import messages as wire


def _batch(i: int, size: int = 100_000) -> tuple[bytes, bytes]:
    body = wire.encode_batch([i.to_bytes(4, "little") * (size // 4)])
    return wire.digest(body), body


def test_batches_and_reports_survive_a_reopen(tmp_path: Path) -> None:
    store = BatchStore(tmp_path)
    batches = [_batch(i) for i in range(5)]
    store.put_many([(d, b, 1) for d, b in batches[:3]])
    store.put(*batches[3])
    store.put(*batches[4], report=0)
    store.close()
    store = BatchStore(tmp_path)
    try:
        assert dict(store.items()) == dict(batches)
        assert set(store.digests()) == {d for d, _ in batches}
        assert all(store.get(d) == b for d, b in batches)
        assert store.get(b"\x00" * 32) is None
        expected = {(1, d) for d, _ in batches[:3]} | {(0, batches[4][0])}
        assert set(store.pending_reports()) == expected
        store.put(*_batch(9))  # appends after what is there
        assert all(store.get(d) == b for d, b in [*batches, _batch(9)])
    finally:
        store.close()


def test_the_log_describes_itself(tmp_path: Path) -> None:
    store = BatchStore(tmp_path)
    digest, body = _batch(1)
    store.put(digest, body)
    store.close()
    data = (tmp_path / VALUE_LOG).read_bytes()
    assert HEADER.unpack_from(data) == (len(body), digest)
    assert data[HEADER.size :] == body


def test_an_unreferenced_tail_is_skipped(tmp_path: Path) -> None:
    """A crash between the body's write and the locator's leaves bytes nobody points to."""
    store = BatchStore(tmp_path)
    first = _batch(1)
    store.put(*first)
    store.close()
    with open(tmp_path / VALUE_LOG, "ab") as f:
        f.write(b"torn record")
    store = BatchStore(tmp_path)
    try:
        second = _batch(2)
        store.put(*second)
        assert store.get(first[0]) == first[1]
        assert store.get(second[0]) == second[1]
        assert len(store) == 2
    finally:
        store.close()


def test_a_failed_append_leaves_no_locator_and_no_tail(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = BatchStore(tmp_path)
    try:
        kept = _batch(1)
        store.put(*kept)
        size = (tmp_path / VALUE_LOG).stat().st_size
        real_writev = os.writev

        def half_then_full(fd: int, buffers: list) -> int:
            real_writev(fd, [bytes(buffers[0])[:10]])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(vectored.os, "writev", half_then_full)
        lost = _batch(2)
        with pytest.raises(OSError):
            store.put(*lost, report=1)
        monkeypatch.undo()
        assert (tmp_path / VALUE_LOG).stat().st_size == size
        assert lost[0] not in store and store.pending_reports() == []
        after = _batch(3)
        store.put(*after)
        assert store.get(after[0]) == after[1] and store.get(kept[0]) == kept[1]
    finally:
        store.close()


def test_partial_writes_and_many_buffers_are_written_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_writev = os.writev
    calls = []

    def short_writev(fd: int, buffers: list) -> int:
        calls.append(len(buffers))
        first = bytes(buffers[0])
        return real_writev(fd, [first[: max(1, len(first) // 2)]])

    monkeypatch.setattr(vectored.os, "writev", short_writev)
    monkeypatch.setattr(vectored, "MAX_IOV", 3)
    log = ValueLog(tmp_path / "v.log")
    try:
        records = [(bytes([i]) * 32, bytes([i]) * (100 + i)) for i in range(7)]
        locators = log.append(records, sync=True)
        assert [log.read(loc) for loc in locators] == [body for _, body in records]
        assert max(calls) <= 3
    finally:
        log.close()


def test_a_log_cut_behind_the_store_is_an_error_not_garbage(tmp_path: Path) -> None:
    store = BatchStore(tmp_path)
    digest, body = _batch(1)
    store.put(digest, body)
    os.truncate(tmp_path / VALUE_LOG, 100)
    try:
        with pytest.raises(CorruptValueLog, match="file ends sooner"):
            store.get(digest)
    finally:
        store.close()


def test_large_bodies_go_to_the_log_and_small_ones_stay_in_leveldb(tmp_path: Path) -> None:
    """LevelDB holds a tag and a 12-byte locator per large batch: nothing big to compact;
    a small batch stays inline, so its write needs no second sync."""
    store = BatchStore(tmp_path)
    large, small = _batch(1, size=MIN_LOGGED_BODY), _batch(2, size=MIN_LOGGED_BODY // 2)
    store.put_many([(*large, 1), (*small, 1)])
    assert store.get(large[0]) == large[1] and store.get(small[0]) == small[1]
    store.close()
    assert (tmp_path / VALUE_LOG).stat().st_size == HEADER.size + len(large[1])
    db = plyvel.DB(str(tmp_path))
    try:
        assert len(db.get(b"b/" + large[0])) == 1 + 12
        assert db.get(b"b/" + small[0]) == b"\x00" + small[1]
    finally:
        db.close()


def _resident_pages(path: Path) -> int:
    """Pages of `path` in the page cache now (mincore on a mapping, which faults none in)."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    int_ = ctypes.c_int
    libc.mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, int_, int_, int_, ctypes.c_long)
    libc.munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
    libc.mincore.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p)
    size = path.stat().st_size
    vec = (ctypes.c_ubyte * -(-size // mmap.PAGESIZE))()
    with path.open("rb") as f:
        base = libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, f.fileno(), 0)
        if base in (None, ctypes.c_void_p(-1).value):
            pytest.skip(f"mmap: errno {ctypes.get_errno()}")
        try:
            if libc.mincore(base, size, vec) != 0:
                pytest.skip(f"mincore: errno {ctypes.get_errno()}")
        finally:
            libc.munmap(base, size)
    return sum(v & 1 for v in vec)


def _filesystem(path: Path) -> str:
    """The type of the filesystem holding `path` (longest mount point of /proc/mounts)."""
    best, kind = "", ""
    for line in Path("/proc/mounts").read_text().splitlines():
        _, point, fs = line.split()[:3]
        if path.is_relative_to(point) and len(point) > len(best):
            best, kind = point, fs
    return kind


@pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="no posix_fadvise here")
def test_synced_bodies_leave_the_page_cache_and_still_read_back(tmp_path: Path) -> None:
    """A synced append drops its pages (each would be fresh memory); an unsynced one cannot
    (its pages are dirty): the control that shows the count is real."""
    if _filesystem(tmp_path) in ("tmpfs", "ramfs", "overlay", ""):
        pytest.skip("the page cache is the storage on this filesystem")
    records = [(bytes([i]) * 32, os.urandom(1 << 20)) for i in range(4)]
    synced, unsynced = ValueLog(tmp_path / "synced.log"), ValueLog(tmp_path / "unsynced.log")
    try:
        locators = synced.append(records, sync=True)
        unsynced.append(records, sync=False)
        pages = (4 * ((1 << 20) + HEADER.size)) // mmap.PAGESIZE
        assert _resident_pages(tmp_path / "synced.log") <= 2  # at most the partial ends
        assert _resident_pages(tmp_path / "unsynced.log") >= pages
        assert [synced.read(loc) for loc in locators] == [body for _, body in records]
    finally:
        synced.close()
        unsynced.close()

"""The worker's process keeps freed memory for reuse (worker/allocator.py)."""

from __future__ import annotations

import platform
import subprocess
import sys
from typing import Any

import pytest

from worker import allocator
from worker.allocator import keep_freed_memory, uninitialized

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

#: a Noise message's worth of outputs per 500 KB batch, allocated then freed, 200 times
CHURN = """
import resource, sys
if sys.argv[1] == "tuned":
    from worker.allocator import keep_freed_memory
    assert keep_freed_memory()
for _ in range(3):
    [bytearray(65_535) for _ in range(8)]
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(200):
    [bytearray(65_535) for _ in range(8)]
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _page_faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", CHURN, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout)


def test_thresholds_are_set_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = allocator._mallopt

    def counted() -> Any:
        calls.append(1)
        return real()

    monkeypatch.setattr(allocator, "_mallopt", counted)
    monkeypatch.setattr(allocator, "_tuned", None)
    assert keep_freed_memory() is True
    assert keep_freed_memory() is True
    assert len(calls) == 1


def test_freed_buffers_are_reused_instead_of_faulted_in_again() -> None:
    fresh_each_time = 200 * 8 * 65_535 // 4096
    assert _page_faults("default") > fresh_each_time // 2  # what glibc does untuned
    assert _page_faults("tuned") < fresh_each_time // 20


@pytest.mark.parametrize("size", [0, 1, 5, 1 << 17])
def test_an_uninitialized_buffer_is_a_writable_bytearray_of_its_size(size: int) -> None:
    buffer = uninitialized(size)
    assert type(buffer) is bytearray and len(buffer) == size
    buffer[:] = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    assert buffer == bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    del buffer[size // 2 :]  # a bytearray like any other: it shrinks (the opener cuts it)
    assert len(buffer) == size // 2

"""Keep freed memory in the process for reuse (glibc only; elsewhere nothing happens).

glibc's malloc hands memory back to the kernel as soon as the top of the heap holds more
than 128 KiB free, and serves blocks of 128 KiB and more from fresh mappings. A worker
allocates and frees a 64 KiB AEAD output per Noise message and a 500 KB buffer per batch,
so each of those faulted in new zeroed pages: measured here, that doubled what
ChaCha20-Poly1305 costs per message (274 vs 138 us per 500 KB). Fixed thresholds keep
up to TRIM_THRESHOLD of freed memory for the next allocation instead.

`uninitialized(n)` is a bytearray whose bytes are not zeroed first, for a buffer that is
written whole before anything reads it (a decryption's output): `bytearray(n)` writes
every byte twice, and in a busy worker that first pass goes to memory out of cache.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
#: free memory kept at the top of the heap before any is returned to the kernel
TRIM_THRESHOLD = 256 << 20
#: blocks this large or larger still get a mapping of their own (glibc's upper bound)
MMAP_THRESHOLD = 32 << 20

_tuned: bool | None = None


def keep_freed_memory() -> bool:
    """Set glibc's thresholds once per process; False where there is no glibc."""
    global _tuned
    if _tuned is None:
        mallopt = _mallopt()
        _tuned = mallopt is not None and all(
            mallopt(param, value) == 1
            for param, value in (
                (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
                (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            )
        )
        if not _tuned:
            log.debug("malloc thresholds left as they are (no glibc mallopt)")
    return _tuned


def _bytearray_of_size() -> Callable[[int], bytearray]:
    """CPython's PyByteArray_FromStringAndSize(NULL, n): n bytes, not zeroed."""
    try:
        make = ctypes.pythonapi.PyByteArray_FromStringAndSize
    except AttributeError:  # not CPython
        return bytearray
    make.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
    make.restype = ctypes.py_object
    return lambda n: make(None, n)  # type: ignore[no-any-return]


#: `uninitialized(n)`: a bytearray of n bytes whose contents are whatever the memory held;
#: write every byte before reading any, and never hand out bytes not written.
uninitialized: Callable[[int], bytearray] = _bytearray_of_size()


def _mallopt() -> Callable[[int, int], int] | None:
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt

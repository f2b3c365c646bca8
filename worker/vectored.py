"""Vectored writes to a file descriptor, without joining the buffers first.

One loop for every writer of the data path (sockets and the value log): it writes until
everything is out or the descriptor would block, and returns what is left.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

#: buffers per writev call (Linux allows 1024)
MAX_IOV = 512


def write_vectored(fd: int, parts: Sequence[bytes | bytearray | memoryview]) -> list[memoryview]:
    """Write `parts` in order as far as `fd` takes them now; the unwritten rest (empty
    when all went out; a blocking descriptor, such as a file, takes everything)."""
    views = [memoryview(p) for p in parts if len(p)]
    first = 0
    while first < len(views):
        try:
            sent = os.writev(fd, views[first : first + MAX_IOV])
        except BlockingIOError:
            break
        while sent:
            size = len(views[first])
            if sent < size:
                views[first] = views[first][sent:]
                break
            sent -= size
            first += 1
    return views[first:]

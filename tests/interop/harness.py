"""Running a foreign peer as a subprocess: its stdout lines are the only synchronisation.

The child binds port 0 and prints its address; every wait is on a printed line, under
the caller's deadline. Leaving the block kills the child if it is still running and
reaps it, so no process and no port outlives a test.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]


class PeerFailed(AssertionError):
    """The child said FAIL, exited, or printed something out of protocol."""


@dataclass
class Child:
    process: trio.Process
    stderr_path: Path
    lines: list[str] = field(default_factory=list)
    _buffer: bytearray = field(default_factory=bytearray)

    async def line(self) -> str:
        """The next stdout line; PeerFailed on FAIL or end of output."""
        assert self.process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self.process.stdout.receive_some(65536)
            if not chunk:
                raise PeerFailed(f"peer exited before its next line{self.diagnostics()}")
            self._buffer += chunk
        raw, _, rest = bytes(self._buffer).partition(b"\n")
        self._buffer[:] = rest
        text = raw.decode("utf-8", "replace")
        self.lines.append(text)
        if text.startswith("FAIL"):
            raise PeerFailed(f"peer: {text}{self.diagnostics()}")
        return text

    async def expect(self, word: str) -> str:
        """The rest of the next line, which must start with `word`."""
        text = await self.line()
        head, _, rest = text.partition(" ")
        if head != word:
            raise PeerFailed(f"expected {word}, peer printed {text!r}{self.diagnostics()}")
        return rest

    async def finish(self) -> int:
        """Close its stdin (the signal to exit), and return its exit code."""
        assert self.process.stdin is not None
        await self.process.stdin.aclose()
        return await self.process.wait()

    def diagnostics(self) -> str:
        tail = self.stderr_path.read_text(errors="replace")[-4000:]
        return f"\n--- peer stdout ---\n{chr(10).join(self.lines)}\n--- peer stderr ---\n{tail}"


@contextlib.asynccontextmanager
async def run_child(
    argv: Sequence[str], stderr_path: Path, cwd: Path = ROOT
) -> AsyncIterator[Child]:
    with stderr_path.open("wb") as stderr:
        process = await trio.lowlevel.open_process(
            list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, cwd=cwd
        )
    child = Child(process, stderr_path)
    try:
        yield child
    finally:
        with trio.CancelScope(shield=True):
            if process.returncode is None:
                process.kill()
            await process.wait()
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    await stream.aclose()

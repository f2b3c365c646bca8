"""Length-prefixed framing (u32 big-endian), as the original's client and primary links."""

from __future__ import annotations

import struct

import trio

_LEN = struct.Struct(">I")


class FrameTooLarge(ValueError):
    pass


def frame(payload: bytes) -> bytes:
    return _LEN.pack(len(payload)) + payload


class FrameReader:
    """Buffered reader that yields whole frames from a trio stream without per-byte work."""

    def __init__(self, stream: trio.abc.ReceiveStream, max_frame: int) -> None:
        self._stream = stream
        self._max = max_frame
        self._buf = bytearray()

    def _pop_ready(self) -> list[bytes]:
        frames: list[bytes] = []
        buf, pos, end = self._buf, 0, len(self._buf)
        while end - pos >= 4:
            (size,) = _LEN.unpack_from(buf, pos)
            if size > self._max:
                raise FrameTooLarge(f"frame of {size} bytes > limit {self._max}")
            if end - pos - 4 < size:
                break
            frames.append(bytes(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return frames

    async def read_frames(self) -> list[bytes] | None:
        """The next complete frames (at least one), or None at a clean end of stream."""
        while True:
            frames = self._pop_ready()
            if frames:
                return frames
            chunk = await self._stream.receive_some(1 << 18)
            if not chunk:
                if self._buf:
                    raise trio.BrokenResourceError("stream ended inside a frame")
                return None
            self._buf += chunk

"""Primary connector: the processor's reports, in order, to this authority's primary.

One connection to the primary (the digest collector in this testbed). The primary
speaks first with a random challenge; the connector answers with a hello signed by the
authority's key (worker/wire/reports.py), so the primary accepts reports only from its
own authority's workers. Reports arrive through a bounded channel (back-pressure rather
than loss) and go out in plain frames; the primary confirms them with a running count,
and only a confirmed report is `delivered` (the store then forgets it: reports are
durable until confirmed). Unconfirmed reports are re-sent on the next link, which is
redialed with backoff whenever one breaks. A report lingers up to LINGER for others to
go out with it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

import trio

from worker.changes import Changes
from worker.errors import Refused
from worker.keys import KeyPair
from worker.streams import STREAM_ERRORS, Deadlines, read_frame
from worker.wire.frames import FrameBuffer, frame
from worker.wire.reports import (
    NONCE_BYTES,
    PrimaryHello,
    Report,
    decode_confirmation,
    encode_hello,
    encode_report,
    hello_message,
)

log = logging.getLogger(__name__)

#: Reports written per send, at most.
BATCH = 256
#: Seconds a report waits for others to share its write (and the primary's confirmation):
#: reports are evidence, not on the quorum path, and one round trip per report would be
#: most of what a lightly loaded worker does.
LINGER = 0.05
#: Reports sent but not yet confirmed, at most (then the connector waits for the primary).
MAX_UNCONFIRMED = 4096
#: Seconds the primary may take to send its challenge and each confirmation frame.
LINK_DEADLINE = 10.0


class PrimaryConnector:
    """Delivers reports in order to the primary, reconnecting until it is reachable."""

    def __init__(
        self,
        host: str,
        port: int,
        from_processor: trio.MemoryReceiveChannel[Report],
        changes: Changes | None = None,
        *,
        keypair: KeyPair | None = None,
        worker_id: int = 0,
        delivered: Callable[[list[Report]], None] | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._rx = from_processor
        self._changes = changes or Changes()
        self._keypair = keypair
        self._worker_id = worker_id
        self._delivered = delivered or (lambda reports: None)
        self._unsent: deque[Report] = deque()
        self._unconfirmed: deque[Report] = deque()
        self.sent = 0  # confirmed by the primary

    @property
    def queued(self) -> int:
        """Reports not yet confirmed: in the channel, waiting to be (re)sent, or in flight."""
        buffered = self._rx.statistics().current_buffer_used
        return buffered + len(self._unsent) + len(self._unconfirmed)

    async def run(self) -> None:
        delay = 0.05
        while True:
            try:
                stream = await trio.open_tcp_stream(self.host, self.port)
            except OSError as exc:
                log.debug("primary %s:%s unreachable: %s", self.host, self.port, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            try:
                async with stream:
                    buffer = FrameBuffer(64)
                    await self._introduce(stream, buffer)
                    delay = 0.05
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._confirmations, stream, buffer)
                        await self._send_reports(stream)
            except (*STREAM_ERRORS, Refused, trio.TooSlowError) as exc:
                log.debug("primary link lost: %s", exc)
            # What was not confirmed goes out again on the next link; the collector keeps
            # sets, so a repeat is harmless where a loss would not be.
            self._unsent.extendleft(reversed(self._unconfirmed))
            self._unconfirmed.clear()
            await trio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _introduce(self, stream: trio.SocketStream, buffer: FrameBuffer) -> None:
        deadlines = Deadlines(LINK_DEADLINE, LINK_DEADLINE)
        nonce = await read_frame(stream, buffer, deadlines=deadlines)
        if not isinstance(nonce, bytes) or len(nonce) != NONCE_BYTES:
            raise Refused("bad_challenge", "the primary sent no challenge", source="handshake")
        if self._keypair is None:
            log.warning("no authority key: the primary will refuse this worker's reports")
            authority, signature = bytes(32), bytes(64)
        else:
            authority = self._keypair.public_bytes
            signature = self._keypair.sign(hello_message(nonce, authority, self._worker_id))
        hello = PrimaryHello(authority, self._worker_id, signature)
        await stream.send_all(frame(encode_hello(hello)))

    async def _send_reports(self, stream: trio.SocketStream) -> None:
        while True:
            await self._changes.wait_until(lambda: len(self._unconfirmed) < MAX_UNCONFIRMED)
            if not self._unsent:
                self._unsent.append(await self._rx.receive())
                if self._rx.statistics().current_buffer_used + 1 < BATCH:
                    await trio.sleep(LINGER)
            while len(self._unsent) < BATCH:
                try:
                    self._unsent.append(self._rx.receive_nowait())
                except trio.WouldBlock:
                    break
            batch = [self._unsent.popleft() for _ in range(min(BATCH, len(self._unsent)))]
            self._unconfirmed.extend(batch)
            await stream.send_all(b"".join(frame(encode_report(r)) for r in batch))

    async def _confirmations(self, stream: trio.SocketStream, buffer: FrameBuffer) -> None:
        """The primary's running count; each step confirms the oldest reports in flight."""
        confirmed = 0
        while (data := await read_frame(stream, buffer)) is not None:
            count = decode_confirmation(data)  # type: ignore[arg-type]
            if not confirmed <= count <= confirmed + len(self._unconfirmed):
                raise Refused("bad_confirmation", f"count {count}", source="handshake")
            done = [self._unconfirmed.popleft() for _ in range(count - confirmed)]
            confirmed = count
            self.sent += len(done)
            self._delivered(done)
            self._changes.notify()
        raise trio.BrokenResourceError("the primary closed the link")

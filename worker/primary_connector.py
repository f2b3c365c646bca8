"""Primary connector: the processor's reports, in order, to this authority's primary.

One connection to the primary (the digest collector in this testbed); reports arrive
through a bounded channel (back-pressure rather than loss), go out in plain frames
(worker/wire/reports.py), and the link is redialed with backoff when it breaks.
"""

from __future__ import annotations

import logging

import trio

from worker.changes import Changes
from worker.streams import STREAM_ERRORS
from worker.wire.frames import frame
from worker.wire.reports import Report, encode_report

log = logging.getLogger(__name__)

#: Reports written per send, at most.
BATCH = 256


class PrimaryConnector:
    """Delivers reports in order to the primary, reconnecting until it is reachable."""

    def __init__(
        self,
        host: str,
        port: int,
        from_processor: trio.MemoryReceiveChannel[Report],
        changes: Changes | None = None,
    ) -> None:
        self.host, self.port = host, port
        self._rx = from_processor
        self._changes = changes or Changes()
        self.sent = 0

    @property
    def queued(self) -> int:
        return self._rx.statistics().current_buffer_used

    async def run(self) -> None:
        delay = 0.05
        unsent: list[Report] = []
        while True:
            try:
                stream = await trio.open_tcp_stream(self.host, self.port)
            except OSError as exc:
                log.debug("primary %s:%s unreachable: %s", self.host, self.port, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, 2.0)
                continue
            delay = 0.05
            try:
                async with stream:
                    while True:
                        if not unsent:
                            unsent.append(await self._rx.receive())
                        while len(unsent) < BATCH:
                            try:
                                unsent.append(self._rx.receive_nowait())
                            except trio.WouldBlock:
                                break
                        await stream.send_all(b"".join(frame(encode_report(r)) for r in unsent))
                        self.sent += len(unsent)
                        unsent = []
                        self._changes.notify()
            except STREAM_ERRORS as exc:
                # What failed to go out is re-sent on the next link; the collector keeps
                # sets, so a repeat is harmless where a loss would not be.
                log.debug("primary link lost: %s", exc)

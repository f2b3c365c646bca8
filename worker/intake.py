"""Clients' transactions endpoint: u32-length-prefixed frames, one transaction each."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable

import trio

from worker.wire.frames import FrameReader, FrameTooLarge

log = logging.getLogger(__name__)


class TransactionIntake:
    def __init__(
        self,
        host: str,
        port: int,
        max_transaction_size: int,
        deliver: Callable[[list[bytes]], Awaitable[None]],
    ) -> None:
        self.host, self.port = host, port
        self._max = max_transaction_size
        self._deliver = deliver
        self.rejections: Counter[str] = Counter()
        self.clients = 0

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        async with trio.open_nursery() as nursery:
            task_status.started(f"{self.host}:{self.port}")
            await trio.serve_listeners(self._handle, listeners, handler_nursery=nursery)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.clients += 1
        reader = FrameReader(stream, max_frame=self._max)
        try:
            async with stream:
                while (frames := await reader.read_frames()) is not None:
                    txs = [tx for tx in frames if tx]
                    if len(txs) != len(frames):
                        self.rejections["empty_transaction"] += len(frames) - len(txs)
                    if txs:
                        await self._deliver(txs)
        except FrameTooLarge:
            self.rejections["oversized"] += 1
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            log.debug("client connection closed: %s", exc)
        finally:
            self.clients -= 1

"""Intake: the clients' transactions endpoint (u32-length-prefixed frames, one transaction
each), handing each chunk read off a connection to the batch maker.

Sending to the batch maker blocks while the pipeline is full, so a stalled quorum
stops this reader and backs up to the client's socket.
"""

from __future__ import annotations

import logging
from collections import Counter

import trio

from worker.streams import STREAM_ERRORS, read_frames, serve_tcp
from worker.wire.frames import FrameBuffer, FrameError, Truncated

log = logging.getLogger(__name__)


class TransactionIntake:
    def __init__(
        self,
        host: str,
        port: int,
        max_transaction_size: int,
        to_batch_maker: trio.MemorySendChannel[list[bytes]],
    ) -> None:
        self.host, self.port = host, port
        self._max = max_transaction_size
        self._to_batch_maker = to_batch_maker
        self.rejections: Counter[str] = Counter()
        self.clients = 0

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_tcp(self.host, self.port, self._handle, task_status=task_status)

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.clients += 1
        buffer = FrameBuffer(self._max)
        try:
            async with stream:
                while (frames := await read_frames(stream, buffer)) is not None:
                    txs = [tx for tx in frames if tx]
                    if len(txs) != len(frames):
                        self.rejections["empty_transaction"] += len(frames) - len(txs)
                    if txs:
                        await self._to_batch_maker.send(txs)  # type: ignore[arg-type]
        except (Truncated, *STREAM_ERRORS) as exc:  # a client that hung up mid-frame
            log.debug("client connection closed: %s", exc)
        except FrameError as exc:
            self.rejections[exc.reason] += 1
        finally:
            self.clients -= 1

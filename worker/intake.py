"""Intake: the clients' transactions endpoint (u32-length-prefixed frames, one transaction
each), handing each chunk read off a connection to the batch maker.

Sending to the batch maker blocks while the pipeline is full, so a stalled quorum
stops this reader and backs up to the client's socket. Clients are not trusted with
the worker's resources: at most `max_client_connections` at a time (others are closed
at once, "too_many_connections"), a client silent for `idle_timeout` or slower than
`frame_timeout` to finish a transaction is closed ("idle_timeout", "frame_timeout"),
and transactions shorter than `min_transaction_size` are refused ("empty_transaction").
"""

from __future__ import annotations

import logging
from collections import Counter

import trio

from worker.config import Parameters
from worker.streams import STREAM_ERRORS, ConnectionLimit, Deadlines, read_frames, serve_tcp
from worker.wire.frames import FrameBuffer, FrameError, Truncated

log = logging.getLogger(__name__)


class TransactionIntake:
    def __init__(
        self,
        host: str,
        port: int,
        max_transaction_size: int,
        to_batch_maker: trio.MemorySendChannel[list[bytes]],
        params: Parameters | None = None,
    ) -> None:
        params = params or Parameters()
        self.host, self.port = host, port
        self._max = max_transaction_size
        self._min = params.min_transaction_size
        self._to_batch_maker = to_batch_maker
        self._deadlines = Deadlines.of_ms(params.idle_timeout, params.frame_timeout)
        self.limit = ConnectionLimit(params.max_client_connections)
        self.rejections: Counter[str] = Counter()

    @property
    def clients(self) -> int:
        return self.limit.active

    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_tcp(
            self.host,
            self.port,
            self._handle,
            limit=self.limit,
            refusals=self.rejections,
            task_status=task_status,
        )

    async def _handle(self, stream: trio.SocketStream) -> None:
        buffer = FrameBuffer(self._max)
        try:
            async with stream:
                while (
                    frames := await read_frames(stream, buffer, deadlines=self._deadlines)
                ) is not None:
                    txs = [tx for tx in frames if len(tx) >= self._min]
                    if len(txs) != len(frames):
                        self.rejections["empty_transaction"] += len(frames) - len(txs)
                    if txs:
                        await self._to_batch_maker.send(txs)  # type: ignore[arg-type]
        except (Truncated, *STREAM_ERRORS) as exc:  # a client that hung up mid-frame
            log.debug("client connection closed: %s", exc)
        except FrameError as exc:
            self.rejections[exc.reason] += 1

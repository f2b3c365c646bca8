"""Intake: the clients' transactions endpoint (u32-length-prefixed frames, one transaction
each), handing what each read off a connection held to the batch maker as runs of
batch-ready transactions (worker/wire/transactions.py: a burst is converted whole).

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
from worker.streams import STREAM_ERRORS, ConnectionLimit, Deadlines, read_runs, serve_tcp
from worker.wire.frames import FrameError, Truncated
from worker.wire.transactions import ClientFrames, TxRun

log = logging.getLogger(__name__)


class TransactionIntake:
    def __init__(
        self,
        host: str,
        port: int,
        max_transaction_size: int,
        to_batch_maker: trio.MemorySendChannel[list[TxRun]],
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
        frames = ClientFrames(self._max, self._min)
        try:
            async with stream:
                while (runs := await read_runs(stream, frames, self._deadlines)) is not None:
                    if frames.refused:
                        self.rejections["empty_transaction"] += frames.refused
                        frames.refused = 0
                    if runs:
                        await self._to_batch_maker.send(runs)
        except (Truncated, *STREAM_ERRORS) as exc:  # a client that hung up mid-frame
            log.debug("client connection closed: %s", exc)
        except FrameError as exc:
            self.rejections[exc.reason] += 1

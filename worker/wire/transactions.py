"""Clients' transaction frames in, batch-ready runs of transactions out, sans-IO.

A client sends `u32 length | transaction` frames; a batch holds the same transactions
as msgpack `bin` items (worker/wire/messages.py). A burst from the load client is a
run of frames of one size, so the intake converts a whole run at once with a few slice
operations at C speed (no Python object per transaction): for a bin8/bin16 size, an item
is its frame with the length prefix shortened by one or two bytes and a new first byte.
Runs of mixed sizes, and sizes that need a bin32 header, take a loop per transaction.

`ClientFrames` has the reader interface of `FrameBuffer` (`receive_data`, `partial`,
`wanted`, `end_of_data`), so the deadline readers of worker/streams.py drive it too.
A frame longer than `max_size` raises `FrameTooLarge` from its header alone; frames
shorter than `min_size` are dropped and counted in `refused`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import accumulate

from worker.wire.frames import LENGTH, FrameTooLarge, Truncated
from worker.wire.messages import bin_header, bin_header_size

#: (counter, client send time in seconds or 0.0): a benchmark sample transaction
Sample = tuple[int, float]
#: bin item header bytes -> the item's first byte, for the run conversion
_BIN_MARKER = {2: 0xC4, 3: 0xC5}


@dataclass(frozen=True, slots=True)
class TxRun:
    """Consecutive transactions as `bin` items, ready to go into a batch."""

    #: the msgpack items, concatenated (what a batch holds after its array header)
    items: bytes | bytearray
    count: int
    #: payload bytes of every transaction (0: sizes vary, see `sizes`)
    uniform: int
    #: when sizes vary: every transaction's payload size
    sizes: list[int] = field(default_factory=list)
    #: benchmark samples among them: (index in the run, sample)
    samples: list[tuple[int, Sample]] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Payload bytes of the run (what counts towards `batch_size`)."""
        return self.uniform * self.count if self.uniform else sum(self.sizes)

    def cumulative(self) -> list[int]:
        """Payload bytes up to and including each transaction (runs of mixed sizes)."""
        return list(accumulate(self.sizes))

    def offset(self, index: int, cumulative: list[int] | None = None) -> int:
        """Where transaction `index`'s item starts in `items`."""
        if self.uniform:
            return index * (self.uniform + bin_header_size(self.uniform))
        cum = cumulative if cumulative is not None else self.cumulative()
        payload = cum[index - 1] if index else 0
        return payload + sum(map(bin_header_size, self.sizes[:index]))

    def transactions(self) -> list[bytes]:
        """The transactions themselves (tests, and the rare faults that rewrite a batch)."""
        out, pos = [], 0
        sizes = [self.uniform] * self.count if self.uniform else self.sizes
        view = memoryview(self.items)
        for size in sizes:
            pos += bin_header_size(size)
            out.append(bytes(view[pos : pos + size]))
            pos += size
        return out

    @classmethod
    def of(
        cls, transactions: list[bytes], samples: list[tuple[int, Sample]] | None = None
    ) -> TxRun:
        """A run of given transactions (each sample at its index)."""
        items = b"".join(bin_header(len(tx)) + tx for tx in transactions)
        sizes = [len(tx) for tx in transactions]
        return cls(items, len(transactions), 0, sizes, samples or [])


def parse_sample(tx: bytes | memoryview) -> Sample | None:
    """A benchmark sample (byte 0 = 0, bytes 1..9 = u64 counter), else None.

    The testbed's load client also stamps its send time (u64 ns since the epoch) in
    bytes 9..17, inside the original's padding, so workers can export sample latency.
    """
    if len(tx) < 9 or tx[0] != 0:
        return None
    sent_ns = int.from_bytes(tx[9:17], "big") if len(tx) >= 17 else 0
    return int.from_bytes(tx[1:9], "big"), sent_ns / 1e9


class ClientFrames:
    """Bytes of one client connection in, runs of whole transactions out."""

    def __init__(self, max_size: int, min_size: int = 1) -> None:
        self.max_size, self.min_size = max_size, min_size
        self.refused = 0  # transactions shorter than min_size, dropped
        self._buf = bytearray()

    # -- the reader interface of FrameBuffer ---------------------------------------------
    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        self._buf += data

    @property
    def partial(self) -> bool:
        return bool(self._buf)

    @property
    def buffered(self) -> int:
        return len(self._buf)

    wanted = 0  # transactions are small: no read is sized for one

    def end_of_data(self) -> None:
        if self._buf:
            raise Truncated

    # -- output ----------------------------------------------------------------------------
    def runs(self) -> list[TxRun]:
        """Every whole transaction buffered, as runs (empty until one is complete)."""
        return list(self._parse(self._buf))

    def _parse(self, buf: bytearray) -> Iterator[TxRun]:
        pos, end = 0, len(buf)
        view = memoryview(buf)
        try:
            mixed: list[bytes] = []
            mixed_samples: list[tuple[int, Sample]] = []
            while end - pos >= LENGTH.size:
                (size,) = LENGTH.unpack_from(buf, pos)
                if size > self.max_size:
                    raise FrameTooLarge(size, self.max_size)
                step = LENGTH.size + size
                fit = (end - pos) // step
                if fit == 0:
                    break
                header = bin_header_size(size)
                count = 1
                # Probe for a run only where one can start: a bin8/16 size whose next
                # frame has the same length (mixed sizes would rescan the rest per frame).
                if (
                    fit > 1
                    and header in _BIN_MARKER
                    and buf[pos + step : pos + step + 4] == buf[pos : pos + 4]
                ):
                    with view[pos : pos + fit * step] as region:
                        count = _uniform_prefix(region, step, buf[pos : pos + 4])
                if count > 1:
                    if mixed:
                        yield TxRun.of(mixed, mixed_samples)
                        mixed, mixed_samples = [], []
                    start, pos = pos, pos + count * step
                    if size < self.min_size:
                        self.refused += count
                        continue
                    with view[start:pos] as region:
                        run = _run_of_frames(region, count, size, header)
                    yield run
                    continue
                pos += step  # one frame, the slow way
                if size < self.min_size:
                    self.refused += 1
                    continue
                tx = bytes(view[pos - size : pos])
                if tx[:1] == b"\x00" and (sample := parse_sample(tx)) is not None:
                    mixed_samples.append((len(mixed), sample))
                mixed.append(tx)
            if mixed:
                yield TxRun.of(mixed, mixed_samples)
        finally:
            view.release()
            del buf[:pos]


def _uniform_prefix(region: memoryview, step: int, prefix: bytes | bytearray) -> int:
    """How many frames at the start of `region` (frames of `step` bytes if they all have
    the first one's length prefix) do have it: four strided comparisons per probe."""
    fit = len(region) // step
    columns = [bytes(region[i::step]) for i in range(LENGTH.size)]
    expected = [bytes((prefix[i],)) * fit for i in range(LENGTH.size)]
    if columns == expected:
        return fit
    low, high = 1, fit  # frame 0 matches; find the longest matching prefix
    while low < high:
        mid = (low + high + 1) // 2
        if all(c[:mid] == e[:mid] for c, e in zip(columns, expected, strict=True)):
            low = mid
        else:
            high = mid - 1
    return low


def _run_of_frames(region: memoryview, count: int, size: int, header: int) -> TxRun:
    """`count` frames of one `size` as bin items: drop 4 - header bytes of every length
    prefix (all zeros) and mark each item's first byte; slice operations only."""
    step = LENGTH.size + size
    drop = LENGTH.size - header  # 1 (bin16) or 2 (bin8) leading zero bytes per frame
    items = bytearray(region[drop:])
    for shifted in range(drop):  # the next frames' leading zeros, one column at a time
        del items[step - drop :: step - shifted]
    items[0 :: size + header] = bytes((_BIN_MARKER[header],)) * count
    kinds = bytes(region[LENGTH.size :: step])  # every transaction's first byte
    samples = []
    at = kinds.find(0)
    while at >= 0:
        start = at * step + LENGTH.size
        sample = parse_sample(region[start : start + min(size, 17)])
        if sample is not None:
            samples.append((at, sample))
        at = kinds.find(0, at + 1)
    return TxRun(items, count, size, samples=samples)

"""The sans-IO Yamux session (yamux_session.py): two sessions wired back to back, and
frames crafted by hand where a peer misbehaves. No sockets."""

from __future__ import annotations

import random

import pytest

from worker.transport.libp2p.yamux_session import (
    ACK,
    DATA,
    DEFAULT_WINDOW,
    FIN,
    GO_AWAY,
    GO_AWAY_NORMAL,
    HEADER,
    INITIAL_WINDOW,
    MAX_FRAME,
    PING,
    RST,
    SYN,
    WINDOW_UPDATE,
    DataReceived,
    Event,
    GoAwayReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
    StreamState,
    StreamUnusable,
    WindowUpdated,
    YamuxProtocolError,
    YamuxSession,
    encode_header,
)


class Pair:
    """A dialer and a listener session; `flush` carries queued bytes across, split
    arbitrarily, and returns each side's events."""

    def __init__(self, **options: object) -> None:
        self.client = YamuxSession(True, **options)  # type: ignore[arg-type]
        self.server = YamuxSession(False, **options)  # type: ignore[arg-type]

    def flush(self, split: int | None = None) -> tuple[list[Event], list[Event]]:
        to_server, to_client = wire(self.client), wire(self.server)
        return _feed(self.client, to_client, split), _feed(self.server, to_server, split)

    def settle(self) -> tuple[list[Event], list[Event]]:
        """Flush until nothing is queued either way."""
        client_events: list[Event] = []
        server_events: list[Event] = []
        while self.client.has_data_to_send or self.server.has_data_to_send:
            c, s = self.flush()
            client_events += c
            server_events += s
        return client_events, server_events

    def open(self) -> tuple[StreamState, StreamState]:
        mine = self.client.open_stream()
        _, server_events = self.settle()
        (opened,) = [e for e in server_events if isinstance(e, StreamOpened)]
        return mine, opened.stream


def wire(session: YamuxSession) -> bytes:
    """What the session queued, as the bytes on the wire."""
    return b"".join(session.data_to_send())


def _feed(session: YamuxSession, data: bytes, split: int | None) -> list[Event]:
    events: list[Event] = []
    pos = 0
    while pos < len(data):
        step = split or random.randint(1, 70_000)
        events += session.receive_data(data[pos : pos + step])
        pos += step
    return events


def _kinds(events: list[Event]) -> list[type]:
    return [type(e) for e in events]


def test_a_new_stream_gets_the_large_window_both_ways() -> None:
    pair = Pair()
    mine, theirs = pair.open()
    assert mine.id % 2 == 1 and theirs.id == mine.id
    assert mine.send_window == theirs.send_window == DEFAULT_WINDOW
    assert pair.server.open_stream().id % 2 == 0


@pytest.mark.parametrize("split", [1, 11, 12, 13, None])
def test_data_both_ways_across_any_split(split: int | None) -> None:
    pair = Pair()
    mine, theirs = pair.open()
    up, down = random.randbytes(300_000), random.randbytes(5)
    assert pair.client.send(mine, up) == len(up)
    assert pair.server.send(theirs, down) == len(down)
    client_events, server_events = pair.flush(split)
    assert set(_kinds(server_events)) == set(_kinds(client_events)) == {DataReceived}
    assert pair.server.read(theirs, 100) + pair.server.read(theirs) == up
    assert pair.client.read(mine) == down
    assert pair.server.buffered == pair.client.buffered == 0


def test_one_event_per_receive_however_many_frames() -> None:
    pair = Pair()
    mine, theirs = pair.open()
    for _ in range(100):
        pair.client.send(mine, b"small frame")
    _, server_events = pair.flush(split=10**9)
    assert server_events == [DataReceived(theirs)]


def test_frames_stay_within_max_frame_and_large_pieces_are_not_copied() -> None:
    pair = Pair(max_frame=5000)
    mine, _ = pair.open()
    payload = bytes(3 * 5000 + 1)
    pair.client.send(mine, payload)
    segments = pair.client.data_to_send()
    assert [len(s) for s in segments] == [12, 5000] * 3 + [13]  # headers apart
    assert all(s.obj is payload for s in segments[1::2])  # type: ignore[union-attr]
    pair.client.send(mine, payload)
    assert frame_sizes(wire(pair.client)) == [5000] * 3 + [1]


def test_a_batch_goes_as_one_frame_when_the_window_allows() -> None:
    """One header per batch, not one per 64 KiB: each is a Noise message to seal and open."""
    pair = Pair()
    mine, _ = pair.open()
    pair.client.send(mine, bytes(500_000))
    assert frame_sizes(wire(pair.client)) == [500_000]
    assert MAX_FRAME >= 500_000


def frame_sizes(sent: bytes) -> list[int]:
    sizes, pos = [], 0
    while pos < len(sent):
        _, kind, _, _, length = HEADER.unpack_from(sent, pos)
        assert kind == DATA
        sizes.append(length)
        pos += HEADER.size + length
    return sizes


def test_the_peers_window_is_honoured() -> None:
    """A peer that grants only the spec's 256 KiB (stock py-libp2p) gets no more until
    it sends a window update."""
    ours = YamuxSession(True)
    stream = ours.open_stream()
    ours.data_to_send()
    ours.receive_data(encode_header(WINDOW_UPDATE, ACK, stream.id, 0))
    assert ours.send(stream, bytes(INITIAL_WINDOW + 10)) == INITIAL_WINDOW
    assert ours.send(stream, b"more") == 0
    events = ours.receive_data(encode_header(WINDOW_UPDATE, 0, stream.id, 4))
    assert _kinds(events) == [WindowUpdated]
    assert ours.send(stream, b"more!") == 4


def test_read_data_is_given_back_once_half_the_window_is_read() -> None:
    pair = Pair()
    mine, theirs = pair.open()
    half = DEFAULT_WINDOW // 2
    pair.client.send(mine, bytes(half - 1))
    pair.flush()
    pair.server.read(theirs)
    assert not pair.server.has_data_to_send  # below half: no update yet
    pair.client.send(mine, b"x")
    pair.flush()
    pair.server.read(theirs)
    client_events, _ = pair.flush()
    assert _kinds(client_events) == [WindowUpdated]
    assert mine.send_window == DEFAULT_WINDOW


def test_a_frame_beyond_the_window_is_refused_from_its_header() -> None:
    pair = Pair()
    mine, _ = pair.open()
    header = encode_header(DATA, 0, mine.id, DEFAULT_WINDOW + 1)
    with pytest.raises(YamuxProtocolError) as refused:
        pair.server.receive_data(header)  # the body never needs to arrive
    assert refused.value.reason == "receive_window_exceeded"


def test_data_beyond_the_window_over_several_frames_is_refused() -> None:
    server = YamuxSession(False, window=INITIAL_WINDOW)
    server.receive_data(encode_header(WINDOW_UPDATE, SYN, 1, 0))
    frame = encode_header(DATA, 0, 1, INITIAL_WINDOW // 2) + bytes(INITIAL_WINDOW // 2)
    server.receive_data(frame + frame)
    with pytest.raises(YamuxProtocolError):
        server.receive_data(encode_header(DATA, 0, 1, 1))


def test_unread_data_of_all_streams_is_bounded() -> None:
    server = YamuxSession(False, max_buffered=1000)
    for stream_id in (1, 3):
        server.receive_data(encode_header(WINDOW_UPDATE, SYN, stream_id, 0))
    server.receive_data(encode_header(DATA, 0, 1, 600) + bytes(600))
    with pytest.raises(YamuxProtocolError) as refused:
        server.receive_data(encode_header(DATA, 0, 3, 600))
    assert refused.value.reason == "receive_window_exceeded"


def test_fin_both_ways_ends_and_forgets_the_stream() -> None:
    pair = Pair()
    mine, theirs = pair.open()
    pair.client.send(mine, b"last words")
    pair.client.close(mine)
    with pytest.raises(StreamUnusable):
        pair.client.send(mine, b"more")
    _, server_events = pair.flush()
    assert _kinds(server_events) == [DataReceived, StreamEnded]
    assert theirs.remote_closed and pair.server.read(theirs) == b"last words"
    pair.server.close(theirs)
    client_events, _ = pair.flush()
    assert _kinds(client_events) == [StreamEnded]
    assert pair.client.streams == {} and pair.server.streams == {}


def test_a_reset_drops_the_stream_and_what_arrives_for_it() -> None:
    pair = Pair()
    mine, theirs = pair.open()
    pair.client.send(mine, b"unread")
    pair.flush()
    pair.server.reset(theirs)
    assert theirs.reset and pair.server.buffered == 0
    pair.client.send(mine, b"in flight")  # sent before the RST arrived
    client_events, server_events = pair.flush()
    assert _kinds(client_events) == [StreamReset]
    assert server_events == [] and pair.server.buffered == 0
    with pytest.raises(StreamUnusable):
        pair.client.send(mine, b"after")


def test_data_after_fin_resets_that_stream_only() -> None:
    server = YamuxSession(False)
    server.receive_data(encode_header(DATA, SYN | FIN, 1, 2) + b"hi")
    events = server.receive_data(encode_header(DATA, 0, 1, 3) + b"bad")
    assert _kinds(events) == [StreamReset]
    sent = wire(server)
    assert HEADER.unpack_from(sent, len(sent) - HEADER.size) == (0, WINDOW_UPDATE, RST, 1, 0)
    events = server.receive_data(encode_header(DATA, SYN, 3, 1) + b"!")
    assert _kinds(events) == [StreamOpened, DataReceived]


def test_pings_are_answered() -> None:
    server = YamuxSession(False)
    assert server.receive_data(encode_header(PING, SYN, 0, 0xDEADBEEF)) == []
    assert wire(server) == encode_header(PING, ACK, 0, 0xDEADBEEF)


def test_go_away() -> None:
    pair = Pair()
    pair.client.go_away()
    _, server_events = pair.flush()
    assert server_events == [GoAwayReceived(GO_AWAY_NORMAL)]
    with pytest.raises(StreamUnusable):
        pair.server.open_stream()
    pair.server.go_away()
    assert wire(pair.server) == encode_header(GO_AWAY, 0, 0, GO_AWAY_NORMAL)
    assert pair.server.receive_data(encode_header(WINDOW_UPDATE, SYN, 1, 0)) == []
    assert wire(pair.server) == encode_header(WINDOW_UPDATE, RST, 1, 0)


@pytest.mark.parametrize(
    "frame",
    [
        HEADER.pack(1, DATA, 0, 1, 0),  # version
        encode_header(7, 0, 1, 0),  # type
        encode_header(WINDOW_UPDATE, SYN, 2, 0),  # the listener's parity, from the dialer
        encode_header(WINDOW_UPDATE, SYN, 0, 0),  # the session's id
    ],
)
def test_protocol_errors(frame: bytes) -> None:
    with pytest.raises(YamuxProtocolError):
        YamuxSession(False).receive_data(frame)


def test_a_duplicate_syn_is_a_protocol_error() -> None:
    server = YamuxSession(False)
    server.receive_data(encode_header(WINDOW_UPDATE, SYN, 1, 0))
    with pytest.raises(YamuxProtocolError):
        server.receive_data(encode_header(WINDOW_UPDATE, SYN, 1, 0))


def test_streams_beyond_the_backlog_are_refused() -> None:
    server = YamuxSession(False, max_inbound_streams=2)
    events = server.receive_data(
        b"".join(encode_header(WINDOW_UPDATE, SYN, i, 0) for i in (1, 3, 5))
    )
    assert _kinds(events) == [StreamOpened, StreamOpened]
    sent = wire(server)
    assert HEADER.unpack_from(sent, len(sent) - HEADER.size) == (0, WINDOW_UPDATE, RST, 5, 0)
    server.reset(server.streams[1])
    assert _kinds(server.receive_data(encode_header(WINDOW_UPDATE, SYN, 7, 0))) == [StreamOpened]


def test_frames_for_unknown_streams_are_discarded() -> None:
    server = YamuxSession(False)
    assert server.receive_data(encode_header(DATA, 0, 9, 5) + b"stray") == []
    assert server.receive_data(encode_header(WINDOW_UPDATE, 0, 9, 5)) == []
    assert server.buffered == 0 and server.streams == {}


def test_a_lost_connection_keeps_only_finished_streams_readable() -> None:
    pair = Pair()
    finished, _ = pair.open()
    open_one, _ = pair.open()
    for stream in (finished, open_one):
        pair.client.send(stream, b"data")
    pair.client.close(finished)
    _, events = pair.flush()
    ended = [e.stream for e in events if isinstance(e, StreamEnded)]
    streams = pair.server.connection_lost()
    assert {s.id for s in streams} == {finished.id, open_one.id}
    (kept,) = ended
    assert not kept.reset and pair.server.read(kept) == b"data"
    (lost,) = [s for s in streams if s is not kept]
    assert lost.reset


def test_a_body_that_is_a_whole_message_is_kept_without_a_copy() -> None:
    server = YamuxSession(False)
    server.receive_data(encode_header(WINDOW_UPDATE, SYN, 1, 0) + encode_header(DATA, 0, 1, 5000))
    body = random.randbytes(5000)
    server.receive_data(body)
    (chunk,) = server.read_chunks(server.streams[1])
    assert chunk is body
    server.receive_data(encode_header(DATA, 0, 1, 3) + b"abc")  # inside a message: copied
    assert server.read(server.streams[1]) == b"abc"


def test_a_large_body_inside_a_bytes_message_is_kept_as_a_view() -> None:
    """A record layer hands up one `bytes` per socket read, holding parts of frames:
    large body pieces are read-only views of it (no copy); small ones, and any piece of
    a mutable message, are copies that a later change of the message cannot reach."""
    server = YamuxSession(False)
    server.receive_data(encode_header(WINDOW_UPDATE, SYN, 1, 0))
    stream = server.streams[1]
    body = random.randbytes(9000)
    message = encode_header(DATA, 0, 1, 9000) + body + encode_header(DATA, 0, 1, 2) + b"xy"
    server.receive_data(message)
    large, small = server.read_chunks(stream)
    assert isinstance(large, memoryview) and large.readonly and large.obj is message
    assert large == body and type(small) is bytes and small == b"xy"
    mutable = bytearray(encode_header(DATA, 0, 1, 9000) + body)
    server.receive_data(mutable)
    mutable[-1] ^= 1
    (copied,) = server.read_chunks(stream)
    assert type(copied) is bytes and copied == body
    frozen = memoryview(bytearray(message)).toreadonly()  # as the TLS record layer's
    server.receive_data(frozen)
    large, small = server.read_chunks(stream)
    assert isinstance(large, memoryview) and large.obj is frozen.obj and type(small) is bytes
    server.receive_data(message)
    assert server.read(stream) == body + b"xy"  # `read` always gives `bytes`
    # a body under half of its message is copied: small unread bodies cannot pin large
    # reads (at most twice what is buffered stays allocated)
    server.receive_data(message + encode_header(PING, SYN, 0, 1) * 1000)
    large, small = server.read_chunks(stream)
    assert type(large) is bytes and large == body


def test_a_run_of_messages_wakes_each_stream_once_and_keeps_their_bodies() -> None:
    """The read loop feeds every Noise message of a socket read at once: one
    DataReceived per stream (not per message), bodies as they came, and the events of
    other streams in order between."""
    pair = Pair()
    a, a_theirs = pair.open()
    b, b_theirs = pair.open()
    payload = random.randbytes(200_000)
    pair.client.send(a, payload)
    sent = wire(pair.client)
    messages = [sent[i : i + 65_519] for i in range(0, len(sent), 65_519)]
    pair.client.send(b, b"other")
    pair.client.send(a, b"more")
    events = pair.server.receive_messages([*messages, wire(pair.client)])
    assert events == [DataReceived(a_theirs), DataReceived(b_theirs), DataReceived(a_theirs)]
    assert pair.server.read(a_theirs) == payload + b"more"
    assert pair.server.read(b_theirs) == b"other"

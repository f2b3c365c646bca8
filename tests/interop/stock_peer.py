"""A committee worker built on stock py-libp2p: TCP + Noise or TLS + Yamux as the library
ships them.

Run as a subprocess by test_interop.py (never imported by the tests): the project's
host (worker/transport/libp2p/host.py) swaps py-libp2p's Yamux class process-wide, so
this peer must not import `worker.transport.libp2p`; it checks that at start. It speaks
the worker protocol of docs/libp2p-protocol.md from the document (handshake signed with
the committee key it is given, batch frames acked the way a worker does), using only
the pure wire codecs of the project.

    python -m tests.interop.stock_peer '<json config>'

Config: seed (hex, the authority key), remote (the other authority's name), epoch,
worker_id, dial (a multiaddr, or null to wait to be dialed), send ([[index, size], ..]:
batches to send, all in flight at once), expect (how many batches the other side
sends), timeout (seconds), security (optional: "noise", the default, or "tls": the only
security protocol the peer offers and accepts), half_close (optional: close the write
side of our batch stream after the last request, print CLOSED, then read the answers).
Prints, one per line: LISTEN <multiaddr>, ADMITTED <PeerId> <security protocol id the
connection negotiated>, RECEIVED <index> <size>, ACKED <index> <size>, DONE; then waits
for the end of stdin and exits 0. Any failure prints FAIL <why> and exits 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import multiaddr
import trio
from libp2p import new_host
from libp2p.abc import IHost, INetStream, ISecureTransport
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.crypto.keys import KeyPair as Libp2pKeyPair
from libp2p.crypto.x25519 import create_new_key_pair as create_x25519_key_pair
from libp2p.custom_types import TProtocol
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE
from libp2p.security.noise.transport import Transport as NoiseTransport
from libp2p.security.tls.transport import PROTOCOL_ID as TLS
from libp2p.security.tls.transport import TLSTransport
from libp2p.stream_muxer import muxer_multistream
from libp2p.stream_muxer.yamux import yamux
from libp2p.stream_muxer.yamux.yamux import PROTOCOL_ID as YAMUX

from tests.interop import payloads
from worker.keys import KeyPair, encode_key, verify
from worker.wire import messages as wire
from worker.wire.frames import Frame, FrameBuffer, Kind, encode_frame

HANDSHAKE = TProtocol("/narwhal/worker/handshake/1.0.0")
BATCH = TProtocol("/narwhal/worker/batch/1.0.0")
SIGNING_TAG = b"narwhal-worker-handshake-v1"
MAX_PAYLOAD = 8 * 1024 * 1024


class Failed(Exception):
    pass


def security_option(name: str, identity: Libp2pKeyPair) -> dict[TProtocol, ISecureTransport]:
    """The one security protocol the peer offers (dialing) and accepts (listening)."""
    if name == "noise":
        noise_key = create_x25519_key_pair().private_key
        return {TProtocol(NOISE): NoiseTransport(identity, noise_privkey=noise_key)}
    if name == "tls":
        return {TProtocol(TLS): TLSTransport(identity)}
    raise Failed(f"unknown security {name!r}")


def negotiated_security(stream: INetStream) -> str:
    """The security protocol id py-libp2p's multistream-select agreed on for the stream's
    connection (set by its security multistream on the secured connection)."""
    secured = getattr(stream.muxed_conn, "secured_conn", None)
    return str(getattr(secured, "negotiated_security_protocol", "unknown"))


def say(*words: object) -> None:
    print(*words, flush=True)


def check_stock() -> None:
    """The point of this peer: py-libp2p exactly as released, nothing of ours patched in."""
    if any(name.startswith("worker.transport") for name in sys.modules):
        raise Failed("the stock peer imported the project's transport")
    if muxer_multistream.Yamux is not yamux.Yamux:
        raise Failed("py-libp2p's Yamux class was replaced")


# -- the handshake, from docs/libp2p-protocol.md --------------------------------------------
def signing_message(peer_id: bytes, worker_id: int, epoch: int) -> bytes:
    return (
        SIGNING_TAG
        + struct.pack(">H", len(peer_id))
        + peer_id
        + struct.pack(">QQ", worker_id, epoch)
    )


def my_handshake(key: KeyPair, peer_id: bytes, worker_id: int, epoch: int) -> bytes:
    signature = key.sign(signing_message(peer_id, worker_id, epoch))
    hs = wire.Handshake(key.public_bytes, worker_id, epoch, signature)
    return encode_frame(
        Kind.HANDSHAKE, 0, struct.pack(">H", len(peer_id)) + peer_id + wire.encode(hs)
    )


def check_handshake(
    frame: Frame, remote: str, authenticated: bytes, config: dict[str, Any]
) -> None:
    if frame.kind != Kind.HANDSHAKE:
        raise Failed(f"expected HANDSHAKE, got kind {frame.kind}")
    (n,) = struct.unpack_from(">H", frame.payload)
    claimed = frame.payload[2 : 2 + n]
    hs = wire.decode(frame.payload[2 + n :], 1024)
    if not isinstance(hs, wire.Handshake) or encode_key(hs.authority) != remote:
        raise Failed(f"handshake from an unexpected authority: {hs!r}")
    if claimed != authenticated:
        raise Failed("handshake signed for another PeerId than the secure channel authenticated")
    if (hs.worker_id, hs.epoch) != (config["worker_id"], config["epoch"]):
        raise Failed(f"handshake for worker {hs.worker_id}, epoch {hs.epoch}")
    if not verify(remote, signing_message(authenticated, hs.worker_id, hs.epoch), hs.signature):
        raise Failed("bad handshake signature")


class Frames:
    """Tagged frames read off a py-libp2p stream."""

    def __init__(self, stream: INetStream) -> None:
        self._stream = stream
        self._buffer = FrameBuffer(MAX_PAYLOAD, tagged=True)

    async def next(self) -> Frame | None:
        while (frame := self._buffer.next_frame()) is None:
            try:
                data = await self._stream.read(1 << 20)
            except EOFError:
                data = b""
            if not data:
                self._buffer.end_of_data()
                return None
            self._buffer.receive_data(data)
        assert isinstance(frame, Frame)
        return frame


# -- the peer ---------------------------------------------------------------------------------
class Peer:
    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.key = KeyPair.generate(bytes.fromhex(config["seed"]))
        self.remote = config["remote"]
        identity = create_new_key_pair()
        self.host: IHost = new_host(
            key_pair=identity,
            sec_opt=security_option(config.get("security", "noise"), identity),
            muxer_opt={TProtocol(YAMUX): yamux.Yamux},
        )
        self.peer_id = self.host.get_id()
        self.handshake = my_handshake(
            self.key, self.peer_id.to_bytes(), config["worker_id"], config["epoch"]
        )
        self.admitted = trio.Event()
        self.remote_id: ID | None = None
        self.security = "unknown"
        self.received: set[int] = set()
        self.all_received = trio.Event()
        if config["expect"] == 0:
            self.all_received.set()
        self.error: BaseException | None = None
        self.scope = trio.CancelScope()

    def failing(self, handler: Callable[[INetStream], Awaitable[None]]) -> Callable[..., Any]:
        """py-libp2p logs and drops a stream handler's exception: make it end the peer."""

        async def run(stream: INetStream) -> None:
            try:
                await handler(stream)
            except Exception as exc:
                self.error = self.error or exc
                self.scope.cancel()

        return run

    async def run(self) -> None:
        with self.scope:
            await self._run()
        if self.error is not None:
            raise self.error

    async def _run(self) -> None:
        self.host.set_stream_handler(HANDSHAKE, self.failing(self.on_handshake))
        self.host.set_stream_handler(BATCH, self.failing(self.on_batch_stream))
        async with self.host.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            addr = next(str(a) for a in self.host.get_addrs() if "/tcp/0" not in str(a))
            say("LISTEN", addr if "/p2p/" in addr else f"{addr}/p2p/{self.peer_id}")
            if self.config["dial"]:
                await self.dial(self.config["dial"])
            await self.admitted.wait()
            say("ADMITTED", self.remote_id, self.security)
            await self.send_batches()
            await self.all_received.wait()
            say("DONE")
            await wait_for_stdin_eof()

    # -- handshake: dialer and listener ------------------------------------------------------
    async def dial(self, addr: str) -> None:
        maddr = multiaddr.Multiaddr(addr)
        remote_id = ID.from_base58(maddr.value_for_protocol("p2p"))
        await self.host.connect(PeerInfo(remote_id, [multiaddr.Multiaddr(addr.split("/p2p/")[0])]))
        stream = await self.host.new_stream(remote_id, [HANDSHAKE])
        frames = Frames(stream)
        await stream.write(self.handshake)
        frame = await frames.next()
        if frame is None:
            raise Failed("the listener refused our handshake")
        check_handshake(frame, self.remote, remote_id.to_bytes(), self.config)
        await stream.write(encode_frame(Kind.HANDSHAKE_OK, 0))
        with contextlib.suppress(Exception):  # the listener ends the handshake stream (a reset)
            await stream.read(1)
        self.security = negotiated_security(stream)
        await stream.reset()
        self.remote_id = remote_id
        self.admitted.set()

    async def on_handshake(self, stream: INetStream) -> None:
        remote_id = stream.muxed_conn.peer_id
        frames = Frames(stream)
        frame = await frames.next()
        if frame is None:
            raise Failed("the dialer closed the handshake stream")
        check_handshake(frame, self.remote, remote_id.to_bytes(), self.config)
        await stream.write(self.handshake)
        frame = await frames.next()
        if frame is None or frame.kind != Kind.HANDSHAKE_OK:
            raise Failed(f"expected HANDSHAKE_OK, got {frame}")
        self.security = negotiated_security(stream)
        await stream.reset()
        self.remote_id = remote_id
        self.admitted.set()

    # -- batches: theirs in, ours out --------------------------------------------------------
    async def on_batch_stream(self, stream: INetStream) -> None:
        """The other side's requests: check each batch, ack it with its digest."""
        if stream.muxed_conn.peer_id != self.remote_id:
            raise Failed("a batch stream before the handshake")
        frames = Frames(stream)
        while (frame := await frames.next()) is not None:
            if frame.kind != Kind.REQUEST:
                raise Failed(f"expected REQUEST, got kind {frame.kind}")
            index, size = payloads.label(frame.payload)
            if index in self.received:
                raise Failed(f"batch {index} received twice")
            await stream.write(
                encode_frame(Kind.RESPONSE, frame.request_id, payloads.ack(frame.payload))
            )
            self.received.add(index)
            say("RECEIVED", index, size)
            if len(self.received) == self.config["expect"]:
                self.all_received.set()

    async def send_batches(self) -> None:
        """Ours: every batch written before any answer is awaited (all in flight)."""
        batches = {
            index + 1: (index, payloads.batch(index, size)) for index, size in self.config["send"]
        }
        if not batches:
            return
        stream = await self.host.new_stream(self.remote_id, [BATCH])
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self.read_answers, stream, dict(batches))
            for request_id, (_, data) in batches.items():
                await stream.write(encode_frame(Kind.REQUEST, request_id, data))
            if self.config.get("half_close"):
                await stream.close()  # FIN: no more requests; the answers are still due
                say("CLOSED")

    async def read_answers(
        self, stream: INetStream, outstanding: dict[int, tuple[int, bytes]]
    ) -> None:
        frames = Frames(stream)
        while outstanding:
            frame = await frames.next()
            if frame is None:
                raise Failed(f"batch stream closed with {len(outstanding)} requests unanswered")
            if frame.kind != Kind.RESPONSE or frame.request_id not in outstanding:
                raise Failed(f"unexpected answer: kind {frame.kind}, request {frame.request_id}")
            index, data = outstanding.pop(frame.request_id)
            if not payloads.is_ack_of(frame.payload, data):
                raise Failed(f"batch {index}: the answer is not the ack of its digest")
            say("ACKED", index, len(data))


async def wait_for_stdin_eof() -> None:
    stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    while await stdin.receive_some(1024):
        pass


async def main(config: dict[str, Any]) -> None:
    check_stock()
    with trio.fail_after(config["timeout"]):
        await Peer(config).run()


if __name__ == "__main__":
    try:
        trio.run(main, json.loads(sys.argv[1]))
    except BaseException as exc:  # report whatever it is, then fail
        say("FAIL", repr(exc).replace("\n", " ")[:2000])
        sys.exit(1)

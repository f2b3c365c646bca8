"""The libp2p worker transport: authenticated peers, one pipelined batch stream each.

Connections are TCP + Noise + Yamux (libp2p_host). On each new connection the
dialer runs the worker handshake (libp2p_handshake) and only then do batch streams
flow (libp2p_link). Each committee peer has a supervisor task that dials it, waits
for the handshake, runs the batch stream and redials with capped exponential backoff
when the link breaks. Nothing is resent: outstanding requests become RequestFailed.
"""

from __future__ import annotations

import contextlib
import math
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, INetConn, INetStream
from libp2p.custom_types import TProtocol
from libp2p.network.config import RetryConfig
from libp2p.peer.id import ID
from libp2p.peer.peerinfo import PeerInfo

from worker.config import Committee, Parameters
from worker.core.requests import expiry_period
from worker.keys import KeyPair
from worker.transport.base import PeerName, RequestFailed, SendRequest, Transport, TransportEvent
from worker.transport.libp2p.admission import HANDSHAKE_PROTOCOL, Admission
from worker.transport.libp2p.gate import ACCEPT_TIMEOUT, InboundGate
from worker.transport.libp2p.handshake import Verifier, make_handshake
from worker.transport.libp2p.host import (
    Notifee,
    buffered_bytes,
    build_host,
    count_unknown_protocols,
    dialable_addr,
    listen_addr,
    load_or_create_identity,
    open_stream_on,
    parse_peer_addr,
    peer_of,
    reset_quietly,
)
from worker.transport.libp2p.inbound import InboundStreams
from worker.transport.libp2p.link import OutboundLink
from worker.transport.libp2p.peers import NotifyingCounter, PeerTable
from worker.transport.libp2p.yamux_session import DEFAULT_WINDOW

BATCH_PROTOCOL = TProtocol("/narwhal/worker/batch/1.0.0")
__all__ = ["BATCH_PROTOCOL", "HANDSHAKE_PROTOCOL", "Libp2pTransport"]
CLOSE_TIMEOUT = 5.0


class Backoff:
    """Capped exponential delay, reset after a success."""

    def __init__(self, initial: float, cap: float) -> None:
        self.initial, self.cap = initial, cap
        self.current = initial

    def reset(self) -> None:
        self.current = self.initial

    def next(self) -> float:
        delay, self.current = self.current, min(self.current * 2, self.cap)
        return delay


class Libp2pTransport(Transport):
    """Implements `worker.transport.base.Transport` over py-libp2p.

    `peer_addrs` (authority name -> multiaddr with /p2p/<PeerId>) overrides the
    committee's `libp2p` addresses; `add_peer_addr` adds one later (ports are only
    known once a host is up).
    """

    def __init__(
        self,
        committee: Committee,
        me: str,
        worker_id: int,
        params: Parameters,
        keypair: KeyPair,
        key_dir: Path,
        listen_host: str = "127.0.0.1",
        peer_addrs: Mapping[str, str] | None = None,
        *,
        listen_port: int = 0,
        handshake_timeout: float = 10.0,
        dial_timeout: float = 10.0,
        accept_timeout: float = ACCEPT_TIMEOUT,
    ) -> None:
        if keypair.name != me:
            raise ValueError("keypair does not belong to `me`")
        self._peers = PeerTable()
        self.rejections: Counter[str] = NotifyingCounter(self._peers.poke)
        #: Things that are not refusals but worth counting (dial failures, late answers).
        self.stats: Counter[str] = NotifyingCounter(self._peers.poke)
        self.handshakes: Counter[str] = NotifyingCounter(self._peers.poke)
        self._events_tx, self.events = trio.open_memory_channel[TransportEvent](math.inf)
        self._committee, self._me, self._worker_id = committee, me, worker_id
        self._params, self._keypair = params, keypair
        self._identity = load_or_create_identity(key_dir)
        self._peer_id = ID.from_pubkey(self._identity.public_key)
        self._listen_host, self._listen_port = listen_host, listen_port
        self._handshake_timeout = handshake_timeout
        self._dial_timeout = dial_timeout
        self._my_handshake = make_handshake(
            keypair, self._peer_id.to_bytes(), worker_id, committee.epoch
        )
        self._admission = Admission(
            self._peers,
            Verifier(committee, me, worker_id),
            self._my_handshake,
            self.rejections,
            self.stats,
            self.handshakes,
            self._spawn,
            handshake_timeout,
        )
        names = [name for name, _ in committee.peer_workers(me, worker_id)]
        self._addrs: dict[str, tuple[ID, multiaddr.Multiaddr]] = {}
        for name, addrs in committee.peer_workers(me, worker_id):
            if addrs.libp2p:
                self._addrs[name] = parse_peer_addr(addrs.libp2p)
        for name, addr in (peer_addrs or {}).items():
            self._addrs[name] = parse_peer_addr(addr)
        self._gate = InboundGate(
            self._peers,
            self._is_known,
            self.rejections,
            accept_timeout=accept_timeout,
            max_pending_per_ip=params.max_handshaking_connections,
        )
        self._sink: Callable[[TransportEvent], None] | None = None
        self._inbound = InboundStreams(
            self._emit_read,
            self.rejections,
            self.stats,
            max_payload=params.max_message_size,
            capacity=params.channel_capacity,
            timeout=params.request_timeout / 1000,
            write_timeout=params.write_timeout / 1000,
        )
        self._links = {
            name: OutboundLink(
                name,
                self._emit,
                self._emit_read,
                self.rejections,
                self.stats,
                self._peers.poke,
                max_payload=params.max_message_size,
                max_queued=params.channel_capacity,
                timeout=params.request_timeout / 1000,
                write_timeout=params.write_timeout / 1000,
            )
            for name in names
        }
        #: Unread stream data per connection beyond which the peer is refused (counted
        #: `receive_window_exceeded`): one stream's window plus a message (our readers
        #: drain their streams continuously).
        self._max_buffered = DEFAULT_WINDOW + params.max_message_size
        self._host: IHost | None = None
        self._nursery: trio.Nursery | None = None
        self._stopped = False
        self.address: str | None = None

    # -- Transport interface ------------------------------------------------------------
    async def serve(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        host = build_host(
            self._identity,
            security=self._params.libp2p_security,
            on_refused=self._count_refusal,
            max_buffered=self._max_buffered,
            send_timeout=self._params.write_timeout / 1000,
        )
        count_unknown_protocols(host, self._count_unknown_protocol)
        host.set_stream_handler(HANDSHAKE_PROTOCOL, self._admission.on_stream)
        host.set_stream_handler(BATCH_PROTOCOL, self._on_batch_stream)
        network = host.get_network()
        network.retry_config = RetryConfig(max_retries=0)  # type: ignore[attr-defined]
        network.register_notifee(
            Notifee(self._admission.on_connected, self._admission.on_disconnected)
        )
        # py-libp2p's swarm closes its connections unshielded when it is cancelled, so a
        # cancelled close leaves sockets open (the peer never notices). The host therefore
        # runs shielded, and is closed explicitly before its scope is cancelled.
        host_scope = trio.CancelScope(shield=True)
        try:
            async with trio.open_nursery() as outer:
                try:
                    await outer.start(self._run_host, host, host_scope)
                    async with trio.open_nursery() as nursery:
                        self._host, self._nursery = host, nursery
                        self.address = dialable_addr(host)
                        for name in self._links:
                            nursery.start_soon(self._supervise, name)
                        nursery.start_soon(self._expire_loop)
                        task_status.started(self.address)
                        await trio.sleep_forever()
                finally:
                    self._nursery = None
                    with trio.CancelScope(shield=True):
                        with trio.move_on_after(CLOSE_TIMEOUT):
                            await host.close()
                        host_scope.cancel()
        finally:
            self._host, self._stopped = None, True
            for link in self._links.values():
                link.fail_all("transport_closed")

    async def _run_host(
        self, host: IHost, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        with scope:
            async with host.run([listen_addr(self._listen_host, self._listen_port)]):
                # Our supervisors redial committee peers; libp2p's auto-connector would
                # also redial departed strangers from the peerstore.
                await host.get_network().auto_connector.stop()  # type: ignore[attr-defined]
                self._gate.install(host)
                task_status.started()
                await trio.sleep_forever()

    def send(self, request: SendRequest) -> None:
        """Requests sent before `serve` starts wait for the first connection."""
        link = self._links.get(request.target)
        if link is None:
            self._emit(RequestFailed(request.request_id, request.target, "unknown_peer"))
        elif self._stopped:
            self._emit(RequestFailed(request.request_id, request.target, "transport_closed"))
        else:
            link.enqueue(request)

    def connected_peers(self) -> set[PeerName]:
        """Authenticated peers whose batch stream is up right now."""
        return {
            name
            for name, link in self._links.items()
            if link.running and self._peers.ready_peer(name) is not None
        }

    # -- discovery ------------------------------------------------------------------------
    @property
    def peer_id(self) -> str:
        return str(self._peer_id)

    def peer_ids(self) -> dict[str, str]:
        """Authority name -> PeerId (base58) of every peer whose handshake we accepted."""
        return self._peers.peer_ids()

    async def wait_discovery(self, expected: set[str] | None = None) -> dict[str, str]:
        """Wait until every `expected` peer (default: all committee peers) is connected
        and authenticated; returns `peer_ids()`."""
        wanted = set(self._links) if expected is None else set(expected)
        await self._peers.wait_until(lambda: wanted <= self.connected_peers())
        return self.peer_ids()

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; re-checked whenever peers, rejections or
        stats change (lets tests and operators await a counted refusal)."""
        await self._peers.wait_until(predicate)

    def add_peer_addrs(self, addrs: Mapping[str, str]) -> None:
        """Learn (or replace) where to dial peers: multiaddrs with /p2p/<PeerId>."""
        for name, addr in addrs.items():
            self._addrs[name] = parse_peer_addr(addr)
        self._peers.poke()

    def add_peer_addr(self, name: str, addr: str) -> None:
        """One peer's address (the older spelling of `add_peer_addrs`)."""
        self.add_peer_addrs({name: addr})

    # -- batch streams ------------------------------------------------------------------
    async def _on_batch_stream(self, stream: INetStream) -> None:
        name = self._peers.name_of(peer_of(stream))
        if name is None or name not in self._links:
            self.rejections["unauthenticated"] += 1
            await reset_quietly(stream)
            return
        await self._inbound.serve(stream, name)

    def _is_known(self, peer_id: ID) -> bool:
        """A PeerId we know for a committee peer (its address, or an accepted handshake)."""
        return peer_id in self._peers.accepted_peer_ids() or any(
            pid == peer_id for pid, _ in self._addrs.values()
        )

    async def _supervise(self, name: str) -> None:
        """Keep one batch stream to `name`: dial, await the handshake, run, redial.

        Redials back off exponentially (capped); a request waiting for the peer skips
        the wait and triggers one dial at once, which fails it fast if the peer is
        down (as a TCP connect would) instead of holding it until its timeout.
        """
        link = self._links[name]
        initial, cap = self._params.retry_initial_delay / 1000, self._params.retry_max_delay / 1000
        backoff = Backoff(initial, cap)
        while True:
            conn = self._peers.ready_conn(name)
            if conn is not None:
                started = trio.current_time()
                await self._run_link(link, conn)
                if trio.current_time() - started < backoff.current:
                    await trio.sleep(backoff.next())  # a link that keeps failing fast
                else:
                    backoff.reset()
                continue
            if await self._dial(name):
                backoff.reset()
                continue
            link.fail_queued("unreachable")
            with trio.move_on_after(backoff.next()):
                await self._peers.wait_until(
                    lambda: link.wanted or self._peers.ready_peer(name) is not None
                )

    async def _dial(self, name: str) -> bool:
        """Connect to `name` unless a connection exists, then wait for the handshake;
        True once the peer is ready. Without an address, only waits for handshakes
        already under way (the peer may be dialing us)."""
        assert self._host is not None
        network = self._host.get_network()
        target = self._addrs.get(name)
        if target is None:
            if self._peers.unsettled():
                with trio.move_on_after(self._handshake_timeout):
                    await self._peers.wait_until(
                        lambda: (
                            self._peers.ready_peer(name) is not None or not self._peers.unsettled()
                        )
                    )
            return self._peers.ready_peer(name) is not None
        peer_id, addr = target
        if not network.get_connections(peer_id):
            network.unblock_peer(peer_id)  # type: ignore[attr-defined]
            try:
                with trio.fail_after(self._dial_timeout):
                    await self._host.connect(PeerInfo(peer_id, [addr]))
            except Exception:  # any dial failure means: back off, retry later
                self.stats["dial_failed"] += 1
                return False
        with trio.move_on_after(self._handshake_timeout):
            await self._peers.wait_until(
                lambda: (
                    self._peers.ready_peer(name) is not None or not network.get_connections(peer_id)
                )
            )
        return self._peers.ready_peer(name) is not None

    async def _run_link(self, link: OutboundLink, conn: INetConn) -> None:
        """Run the link on a stream of this authenticated connection (`host.new_stream`
        might pick, or even dial, a connection whose handshake has not run)."""
        try:
            with trio.fail_after(self._handshake_timeout):
                stream = await open_stream_on(conn, BATCH_PROTOCOL)
        except Exception:
            self.stats["stream_open_failed"] += 1
            return
        try:
            await link.run(stream)
        finally:
            with trio.CancelScope(shield=True):
                await reset_quietly(stream)

    async def _expire_loop(self) -> None:
        period = expiry_period(self._params.request_timeout / 1000)
        while True:
            await trio.sleep(period)
            now = trio.current_time()
            for link in self._links.values():
                link.expire(now)

    def bounds(self) -> dict[str, Any]:
        """What inbound traffic holds now, and its peaks (the hardening tests' figures)."""
        conns = self._host.get_network().get_connections() if self._host is not None else []
        return {
            "connections": len(conns),
            "yamux_buffered": max((buffered_bytes(c) for c in conns), default=0),
            **self._gate.bounds(),
            **self._inbound.bounds(self._links),
        }

    # -- helpers ------------------------------------------------------------------------
    def _emit(self, event: TransportEvent) -> None:
        with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
            self._events_tx.send_nowait(event)

    def _emit_read(self, event: TransportEvent) -> None:
        """A request or response, from the reader task that parsed it."""
        if self._sink is not None:
            self._sink(event)
        else:
            self._emit(event)

    def deliver_inline(self, sink: Callable[[TransportEvent], None]) -> bool:
        self._sink = sink
        return True

    def _count_unknown_protocol(self) -> None:
        self.rejections["unknown_protocol"] += 1

    def _count_refusal(self, reason: str) -> None:
        """A peer broke Yamux or Noise (its connection is closed)."""
        self.rejections[reason] += 1

    def _spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        """Start a task in the transport's nursery (a no-op once it is shutting down)."""
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

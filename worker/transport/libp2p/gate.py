"""Inbound connections until they are admitted: bounded, per source address, with a deadline.

py-libp2p 0.8.1 takes one of 250 inbound slots (`max_connections - min_connections`) for
every accepted TCP connection before Noise, shared by anyone, and keeps the slot of each
connection it upgraded until the swarm stops (the handler waits on the swarm as a
barrier), so 250 idle raw sockets, or 250 upgrades over a worker's life, kept every later
dial out, a restarting committee peer's included. The gate serves the TCP listener
instead (same wire: TCP, Noise, Yamux, then the worker handshake):

- connections not yet admitted are bounded: `max_pending` in all, `max_pending_per_ip`
  per source address. A newcomer over a bound evicts one of the source holding the most:
  the oldest idle one (no byte received yet), else its oldest. A flood thus costs its own
  sockets first, and never keeps a fresh dial (which talks at once) out;
- each gets `accept_timeout` for Noise (and strangers also for the handshake);
- after Noise, a PeerId we know for a committee peer goes through at once: committee
  capacity is never shared with strangers. At most `stranger_slots` unknown PeerIds (an
  authority whose PeerId we do not know yet) may run the handshake at a time; beyond
  those an unknown PeerId is refused right after Noise;
- a connection's slot is freed when it closes, not when the swarm stops.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import multiaddr
import trio
from libp2p.abc import IHost, IMuxedConn, INetwork
from libp2p.io.trio import TrioTCPStream
from libp2p.network.connection.raw_connection import RawConnection
from libp2p.peer.id import ID

from worker.transport.libp2p.peers import PeerTable

MAX_PENDING = 64
MAX_PENDING_PER_IP = 16
STRANGER_SLOTS = 8
ACCEPT_TIMEOUT = 3.0
PENDING = ("raw", "stranger")


@dataclass(eq=False)
class _Entry:
    ip: str
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    #: raw (before Noise) -> stranger | committee -> admitted; or evicted
    phase: str = "raw"
    active: bool = False  # some byte arrived


class _Observed(TrioTCPStream):
    """The accepted socket, noting whether it ever sent a byte (idle ones go first)."""

    def __init__(self, inner: TrioTCPStream, entry: _Entry) -> None:
        super().__init__(inner.stream)
        self._entry = entry

    async def read(self, n: int | None = None) -> bytes:
        data = await super().read(n)
        if data:
            self._entry.active = True
        return data


class InboundGate:
    def __init__(
        self,
        peers: PeerTable,
        is_known: Callable[[ID], bool],
        rejections: Counter[str],
        *,
        accept_timeout: float = ACCEPT_TIMEOUT,
        max_pending: int = MAX_PENDING,
        max_pending_per_ip: int = MAX_PENDING_PER_IP,
        stranger_slots: int = STRANGER_SLOTS,
    ) -> None:
        self._peers, self._is_known, self._rejections = peers, is_known, rejections
        self._timeout = accept_timeout
        self._max_pending, self._max_per_ip = max_pending, max_pending_per_ip
        self._stranger_slots = stranger_slots
        self._entries: list[_Entry] = []  # in arrival order
        #: The most connections ever pending at once (the bound tests assert on).
        self.peak_pending = 0

    def install(self, host: IHost) -> None:
        """Serve every TCP listener of `host` through the gate (call once listening)."""
        swarm = host.get_network()
        for text, listener in swarm.listeners.items():  # type: ignore[attr-defined]
            listener.handler = partial(self._handle, swarm, multiaddr.Multiaddr(text))

    def bounds(self) -> dict[str, Any]:
        """Connections by phase now, and the most ever pending at once."""
        return {
            "gate": dict(Counter(e.phase for e in self._entries)),
            "gate_peak_pending": self.peak_pending,
        }

    # -- one accepted connection ----------------------------------------------------------
    async def _handle(
        self, swarm: INetwork, maddr: multiaddr.Multiaddr, tcp: TrioTCPStream
    ) -> None:
        """Runs for the connection's whole life: trio closes the socket when it returns."""
        remote = tcp.get_remote_address()
        entry = self._enter(remote[0] if remote else "?")
        try:
            with entry.scope:
                await self._serve(swarm, maddr, _Observed(tcp, entry), entry)
        finally:
            self._entries.remove(entry)

    async def _serve(
        self, swarm: INetwork, maddr: multiaddr.Multiaddr, stream: _Observed, entry: _Entry
    ) -> None:
        with trio.move_on_after(self._timeout) as deadline:
            try:
                muxed = await swarm.upgrade_inbound_raw_conn(  # type: ignore[attr-defined]
                    RawConnection(stream, False), maddr
                )
            except Exception:  # Noise or Yamux failed, or the swarm is full: counted there
                return
            if self._is_known(muxed.peer_id):
                entry.phase = "committee"
            elif sum(e.phase == "stranger" for e in self._entries) >= self._stranger_slots:
                self._rejections["stranger_limit"] += 1
                with contextlib.suppress(Exception):
                    await muxed.close()
                return
            else:
                entry.phase = "stranger"
                if not await self._admitted(muxed):
                    return
        if deadline.cancelled_caught:
            self._rejections["accept_timeout"] += 1
            return
        if entry.phase == "committee" and not await self._admitted(muxed):
            return  # the handshake's own timeout applies (admission)
        entry.phase = "admitted"
        await self._peers.wait_until(lambda: self._peers.state_of(muxed) is None)  # closed

    async def _admitted(self, muxed: IMuxedConn) -> bool:
        """Wait for the handshake on this connection: True once both sides accepted."""

        def settled() -> bool:
            state = self._peers.state_of(muxed)
            return state is None or state.ready

        await self._peers.wait_until(settled)
        state = self._peers.state_of(muxed)
        return state is not None and state.ready

    # -- bounds ---------------------------------------------------------------------------
    def _enter(self, ip: str) -> _Entry:
        pending = [e for e in self._entries if e.phase in PENDING]
        same = [e for e in pending if e.ip == ip]
        if len(same) >= self._max_per_ip:
            self._evict(same)
        elif len(pending) >= self._max_pending:
            by_ip = Counter(e.ip for e in pending)
            top = max(by_ip, key=lambda k: by_ip[k])
            self._evict([e for e in pending if e.ip == top])
        entry = _Entry(ip)
        self._entries.append(entry)
        self.peak_pending = max(self.peak_pending, sum(e.phase in PENDING for e in self._entries))
        return entry

    def _evict(self, group: list[_Entry]) -> None:
        victim = next((e for e in group if e.phase == "raw" and not e.active), group[0])
        victim.phase = "evicted"
        victim.scope.cancel()
        self._rejections["evicted"] += 1

"""Which authority is behind which PeerId, per live connection.

A PeerId may hold several connections (a mutual dial gives two); each one runs its
own handshake. An authority name is bound to one PeerId at a time: a second PeerId
claiming it while the first still has an admitted live connection is a duplicate
identity. Once the first is gone, a new PeerId may take the name over (a worker that
lost its key directory).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import trio
from libp2p.abc import IMuxedConn, INetConn
from libp2p.peer.id import ID

from worker.transport.libp2p.handshake import HandshakeRejected


@dataclass(eq=False)
class ConnState:
    conn: INetConn
    peer_id: ID
    name: str | None = None  # set once the remote's handshake is accepted
    ready: bool = False  # both sides accepted: requests may flow
    settled: trio.Event = field(default_factory=trio.Event)  # accepted or refused


class PeerTable:
    def __init__(self) -> None:
        self._conns: dict[INetConn, ConnState] = {}
        self._peer_ids: dict[str, ID] = {}
        self._changed = trio.Event()

    # -- connection lifecycle -------------------------------------------------------
    def track(self, conn: INetConn) -> ConnState:
        state = self._conns.get(conn)
        if state is None:
            state = ConnState(conn, conn.muxed_conn.peer_id)
            self._conns[conn] = state
        return state

    def get(self, conn: INetConn) -> ConnState | None:
        return self._conns.get(conn)

    def state_of(self, muxed: IMuxedConn) -> ConnState | None:
        """The live tracked connection over this muxed connection, if any."""
        if muxed.is_closed:
            return None
        return next((s for s in self._conns.values() if s.conn.muxed_conn is muxed), None)

    def admit(self, state: ConnState, name: str) -> None:
        """Bind `name` to the connection's PeerId, or refuse a duplicate claim."""
        holder = self._peer_ids.get(name)
        if holder is not None and holder != state.peer_id and self._admitted(holder, name):
            raise HandshakeRejected("duplicate_identity")  # another host holds the name
        current = self.name_of(state.peer_id)
        if current is not None and current != name:
            raise HandshakeRejected("duplicate_identity")  # this host already is someone
        state.name = name
        self._peer_ids[name] = state.peer_id
        self._notify()

    def mark_ready(self, state: ConnState) -> None:
        if state.conn in self._conns and state.name is not None:
            state.ready = True
            state.settled.set()
            self._notify()

    def drop(self, conn: INetConn) -> ConnState | None:
        """Forget a connection (refused or gone); always wakes waiters, since the swarm
        may only now have removed a connection that was refused earlier."""
        state = self._conns.pop(conn, None)
        if state is not None:
            state.settled.set()
        self._notify()
        return state

    # -- queries --------------------------------------------------------------------
    def _admitted(self, peer_id: ID, name: str) -> bool:
        return any(s.peer_id == peer_id and s.name == name for s in self._conns.values())

    def name_of(self, peer_id: ID) -> str | None:
        """The authority behind `peer_id` if one of its live connections was admitted."""
        for s in self._conns.values():
            if s.peer_id == peer_id and s.name is not None:
                return s.name
        return None

    def ready_conn(self, name: str) -> INetConn | None:
        """A live connection to `name` on which both sides accepted the handshake."""
        peer_id = self._peer_ids.get(name)
        if peer_id is None:
            return None
        for s in self._conns.values():
            if s.peer_id == peer_id and s.ready and not s.conn.is_closed:
                return s.conn
        return None

    def ready_peer(self, name: str) -> ID | None:
        """The PeerId to send to, if `name` has a ready live connection."""
        return None if self.ready_conn(name) is None else self._peer_ids[name]

    def unsettled(self) -> bool:
        """Some connection's handshake is still under way."""
        return any(not s.settled.is_set() for s in self._conns.values())

    def accepted_peer_ids(self) -> set[ID]:
        """Every PeerId whose handshake we accepted (the last one of each authority)."""
        return set(self._peer_ids.values())

    def peer_ids(self) -> dict[str, str]:
        return {name: str(pid) for name, pid in self._peer_ids.items()}

    # -- waiting --------------------------------------------------------------------
    def poke(self) -> None:
        """Wake waiters for a change made elsewhere (e.g. a new peer address)."""
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_until(self, predicate: Callable[[], bool]) -> None:
        """Return once `predicate()` holds; it is re-checked after every change."""
        while not predicate():
            await self._changed.wait()


class NotifyingCounter(Counter[str]):
    """A Counter that reports every change (so `PeerTable.wait_until` can await counts)."""

    def __init__(self, on_change: Callable[[], None]) -> None:
        super().__init__()
        self._on_change = on_change

    def __setitem__(self, key: str, value: int) -> None:
        super().__setitem__(key, value)
        self._on_change()

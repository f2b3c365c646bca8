"""Discovery hooks of the worker actor's transport (built by `worker.worker.make_transport`).

TCP needs nothing beyond the committee (peers dial the committee's addresses, and a
started worker is listening), so its discovery is complete once every worker started.
libp2p learns its peers' multiaddrs (with PeerIds) only once their hosts are up: the
driver hands them over with `add_peers`, and `wait_discovery` returns once every peer
is connected and authenticated. Its host key lives next to the store, so a worker
restarted on the same node keeps its PeerId.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import trio

from worker.transport.base import Transport


def peer_id(transport: Transport) -> str | None:
    """The libp2p PeerId (base58), or None for transports without one."""
    value = getattr(transport, "peer_id", None)
    return None if value is None else str(value)


def add_peers(transport: Transport, addrs: Mapping[str, str]) -> None:
    """Tell a discovering transport where its peers listen (must run in the trio thread)."""
    add = getattr(transport, "add_peer_addr", None)
    if add is not None:
        for name, addr in addrs.items():
            add(name, addr)


async def wait_discovery(transport: Transport, peers: set[str], timeout: float) -> dict[str, Any]:
    """Return once every peer is reachable by this transport; raise TimeoutError if not."""
    wait = getattr(transport, "wait_discovery", None)
    if wait is None:  # TCP: every worker started is listening; links are dialed lazily
        return {"complete": True, "peers": sorted(peers), "peer_ids": {}}
    try:
        with trio.fail_after(timeout):
            peer_ids = await wait(peers)
    except trio.TooSlowError:
        missing = peers - transport.connected_peers()
        raise TimeoutError(
            f"discovery incomplete after {timeout:g} s: {len(missing)} peer(s) missing"
        ) from None
    return {"complete": True, "peers": sorted(peers), "peer_ids": dict(peer_ids)}

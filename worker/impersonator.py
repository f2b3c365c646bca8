"""An impersonation attempt: a host that claims another authority's identity.

It is a Byzantine authority's extra host, holding only its own key. Over TCP it sends
the unauthenticated Hello naming the victim, then batches; over libp2p it runs the
signed handshake claiming the victim's key (signed with its own, since it has no
other), then tries to send batches. The batches are fresh, so any honest worker that
stores one has stored a batch from outside the committee's honest flow.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from worker.config import Committee, Parameters
from worker.keys import KeyPair, decode_public_key
from worker.streams import read_frame, write_frame
from worker.transport.base import ResponseReceived, SendRequest
from worker.wire import messages as wire
from worker.wire.frames import Frame, FrameBuffer, Kind


def _batches(count: int) -> list[bytes]:
    return [wire.encode_batch([b"\x01impostor" + os.urandom(24)]) for _ in range(count)]


async def _over_tcp(
    committee: Committee, victim: str, worker_id: int, batches: list[bytes], params: Parameters
) -> dict[str, Any]:
    hello = wire.encode(wire.Hello(decode_public_key(victim), worker_id))
    acked = 0
    for _, addrs in committee.peer_workers(victim, worker_id):
        host, port = addrs.worker_hostport
        try:
            stream = await trio.open_tcp_stream(host, port)
        except OSError:
            continue
        async with stream:
            await write_frame(stream, Kind.REQUEST, 0, hello)
            for rid, data in enumerate(batches, start=1):
                await write_frame(stream, Kind.REQUEST, rid, data)
            buffer = FrameBuffer(params.max_message_size, tagged=True)
            with trio.move_on_after(5):
                for _ in batches:
                    frame = await read_frame(stream, buffer)
                    if not isinstance(frame, Frame):
                        break
                    if isinstance(wire.decode(frame.payload, 4096), wire.Ack):
                        acked += 1
    return {"acked": acked}


async def _over_libp2p(
    committee: Committee,
    victim: str,
    worker_id: int,
    batches: list[bytes],
    params: Parameters,
    own: KeyPair,
    key_dir: Path,
    host: str,
    peer_addrs: Mapping[str, str],
) -> dict[str, Any]:
    from worker.transport.libp2p.transport import Libp2pTransport

    forged = KeyPair(name=victim, seed=own.seed)  # claims the victim, signs as itself
    transport = Libp2pTransport(
        committee, victim, worker_id, params, forged, key_dir, listen_host=host
    )
    acked = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(transport.serve)
        transport.add_peer_addrs({p: a for p, a in peer_addrs.items() if p != victim})
        rid = 0
        for peer in peer_addrs:
            for data in batches:
                rid += 1
                transport.send(SendRequest(rid, peer, data))
        with trio.move_on_after(5):
            for _ in range(rid):
                event = await transport.events.receive()
                if isinstance(event, ResponseReceived) and isinstance(
                    wire.decode(event.data, 4096), wire.Ack
                ):
                    acked += 1
        nursery.cancel_scope.cancel()
    return {"acked": acked}


async def impersonate(
    committee: Committee,
    victim: str,
    worker_id: int,
    params: Parameters,
    own: KeyPair,
    key_dir: Path,
    host: str,
    peer_addrs: Mapping[str, str],
    count: int = 5,
) -> dict[str, Any]:
    """Try `count` batches as `victim`; returns what was sent and how many were acked."""
    batches = _batches(count)
    if params.transport == "tcp":
        result = await _over_tcp(committee, victim, worker_id, batches, params)
    else:
        result = await _over_libp2p(
            committee, victim, worker_id, batches, params, own, key_dir, host, peer_addrs
        )
    return {**result, "sent": len(batches), "digests": [wire.digest(b).hex() for b in batches]}

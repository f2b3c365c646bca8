"""Misbehaviour task: the Byzantine traffic a worker sends of its own accord.

While the fault settings ask for it, a flooding worker sends junk requests to every
peer (straight onto the network: a flood is not subject to emulated link faults) and a
replaying one re-sends batches it already broadcast, through the faulty link.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import trio

from worker.changes import Changes
from worker.core.faults import FLOOD_JUNK, Byzantine
from worker.core.records import QuorumRecord
from worker.store import BatchStore
from worker.transport.base import SendRequest, Transport

#: Seconds between replay rounds.
REPLAY_PERIOD = 0.2


class Misbehaviour:
    def __init__(
        self,
        peers: Sequence[str],
        behaviour: Callable[[], Byzantine],
        faults_changed: Changes,
        network: Transport,
        link: Transport,
        store: BatchStore,
        records: Sequence[QuorumRecord],
        request_ids: itertools.count[int],
    ) -> None:
        self._peers = peers
        self._behaviour = behaviour
        self._faults_changed = faults_changed
        self._network = network  # the transport itself
        self._link = link  # the same, through the emulated link faults
        self._store = store
        self._records = records
        self._request_ids = request_ids

    async def run(self) -> None:
        replayed = 0
        while True:
            byz = self._behaviour()
            if not (byz.flood or byz.replay):
                await self._faults_changed.wait()
                continue
            with trio.move_on_after(1 / byz.flood if byz.flood else REPLAY_PERIOD):
                await self._faults_changed.wait()
            for peer in self._peers:
                if byz.flood:
                    self._network.send(SendRequest(next(self._request_ids), peer, FLOOD_JUNK))
                if byz.replay and self._records:
                    record = self._records[replayed % len(self._records)]
                    data = self._store.get(bytes.fromhex(record.digest))
                    if data is not None:
                        self._link.send(SendRequest(next(self._request_ids), peer, data))
            replayed += 1

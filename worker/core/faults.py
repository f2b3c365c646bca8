"""Fault settings of one worker, and the sans-IO decisions they imply.

Network faults are emulated inside the worker (no root, any cluster): a partitioned
link carries nothing in either direction; delay (with jitter), loss and a bandwidth
cap act on what this worker sends (requests and responses), so a symmetric link fault
is configured on both ends. Byzantine behaviours change what the worker answers or
sends. `FaultSettings` is plain data (JSON-able) so a driver can push it through a
control call; `LinkPlan` turns it into per-message decisions given a clock and an RNG,
and the functions at the end hold every Byzantine decision (what to send, what to
answer, which acks to take), so the shell only carries them out.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from worker.wire import messages as wire

ANY_PEER = "*"
#: What a flooding worker sends: a batch message whose body is not an array.
FLOOD_JUNK = b"\x93\x01\x00" + bytes(64)


class LinkFault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    delay: float = Field(default=0.0, ge=0, description="seconds added to every message")
    jitter: float = Field(default=0.0, ge=0, description="uniform +/- seconds around delay")
    loss: float = Field(default=0.0, ge=0, le=1, description="probability a message is lost")
    bandwidth: float | None = Field(default=None, gt=0, description="bytes/s cap on the link")


class Byzantine(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    silent: bool = False  # never answers (stores nothing)
    slow_ack: float = Field(default=0.0, ge=0)  # seconds before each answer
    forged_ack: bool = False  # acks without storing or reporting
    equivocate: bool = False  # sends a different batch to half of its peers
    corrupt: Literal["none", "malformed", "wrong_digest"] = "none"
    flood: float = Field(default=0.0, ge=0)  # junk requests per second to every peer
    replay: bool = False  # re-sends batches it already broadcast

    def active_kinds(self) -> set[str]:
        flags = {
            "silent": self.silent,
            "slow_ack": self.slow_ack > 0,
            "forged_ack": self.forged_ack,
            "equivocation": self.equivocate,
            "corrupt": self.corrupt != "none",
            "flooding": self.flood > 0,
            "replay": self.replay,
        }
        return {kind for kind, on in flags.items() if on}


class FaultSettings(BaseModel):
    """Everything that is currently wrong with one worker (empty = honest and healthy)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    blocked: frozenset[str] = frozenset()  # peers cut off by a partition
    links: dict[str, LinkFault] = Field(default_factory=dict)  # peer or "*" -> fault
    byzantine: Byzantine = Byzantine()

    def is_clear(self) -> bool:
        return not self.blocked and not self.links and self.byzantine == Byzantine()

    def active_kinds(self) -> set[str]:
        """Fault kinds in force, for the `faults_active` gauge."""
        kinds = {"partition"} if self.blocked else set()
        for link in self.links.values():
            if link.delay or link.jitter:
                kinds.add("delay")
            if link.loss:
                kinds.add("loss")
            if link.bandwidth:
                kinds.add("bandwidth")
        return kinds | self.byzantine.active_kinds()


class LinkPlan:
    """Per-message decisions for the current settings: drop, or deliver after a delay."""

    def __init__(self, settings: FaultSettings | None = None, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._next_free: dict[str, float] = {}
        self.settings = settings or FaultSettings()

    @property
    def settings(self) -> FaultSettings:
        return self._settings

    @settings.setter
    def settings(self, value: FaultSettings) -> None:
        self._settings = value
        self._next_free.clear()
        self.network_clear = not value.blocked and not value.links

    def accepts_from(self, peer: str) -> bool:
        return peer not in self._settings.blocked

    def outbound(self, peer: str, size: int, now: float) -> float | None:
        """None: the message is lost. Otherwise the seconds to hold it before sending."""
        if self.network_clear:
            return 0.0
        if peer in self._settings.blocked:
            return None
        link = self._settings.links.get(peer) or self._settings.links.get(ANY_PEER)
        if link is None:
            return 0.0
        if link.loss and self._rng.random() < link.loss:
            return None
        hold = max(0.0, link.delay + self._rng.uniform(-link.jitter, link.jitter))
        if link.bandwidth:
            start = max(now, self._next_free.get(peer, now))
            self._next_free[peer] = start + size / link.bandwidth
            hold += self._next_free[peer] - now
        return hold


# -- Byzantine decisions ---------------------------------------------------------------
def outgoing_batch(byz: Byzantine, data: bytes, peer_index: int, peers: int) -> bytes:
    """What to send peer number `peer_index` (of `peers`) for the batch encoded as `data`:
    garbage when corrupting, another batch to the second half when equivocating."""
    if byz.corrupt == "malformed":
        return b"\xc1" + data[1:]
    if byz.equivocate and peer_index >= peers // 2:
        batch = wire.decode(data, len(data))
        assert isinstance(batch, wire.Batch)
        return wire.encode_batch([*batch.transactions, b"\x01equivocation"])
    return data


def accepts_ack(byz: Byzantine, acked: bytes | None, expected: bytes) -> bool:
    """Whether an answer acking digest `acked` (None: not an ack) counts for our batch;
    an equivocator takes any ack as its own."""
    return acked is not None and (acked == expected or byz.equivocate)


@dataclass(frozen=True, slots=True)
class Answer:
    """How to answer a well-formed peer batch."""

    store: bool  # persist and report it before answering
    digest: bytes  # the digest to ack
    delay: float  # seconds to wait before acking


def answer_for(byz: Byzantine, digest: bytes) -> Answer | None:
    """None: stay silent. Honest: store, then ack the true digest at once."""
    if byz.silent:
        return None
    acked = bytes(b ^ 0xFF for b in digest) if byz.corrupt == "wrong_digest" else digest
    return Answer(store=not byz.forged_ack, digest=acked, delay=byz.slow_ack)

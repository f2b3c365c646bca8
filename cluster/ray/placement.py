"""Where each authority's actors run: one authority per Ray node when there are enough.

An authority is a fault domain, so two authorities share a node only when the cluster
has fewer nodes than authorities (then a note says so). Nodes beyond one per authority
are dealt out to the authorities in equal shares and their workers spread over them.
Actors are pinned with hard node affinity, so a restarted worker goes back to the node
that holds its store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

LOOPBACK = "127.0.0.1"
_HEAD_RESOURCE = "node:__internal_head__"


@dataclass(frozen=True)
class RayNode:
    node_id: str
    ip: str
    is_head: bool = False


@dataclass(frozen=True)
class Placement:
    """`homes[a]`: authority a's node (its collector); `workers[a][w]`: its worker w's node."""

    homes: tuple[RayNode, ...]
    workers: tuple[tuple[RayNode, ...], ...]
    #: Where actors bind on each node: loopback when the whole cluster is one machine.
    hosts: dict[str, str]
    note: str | None = None

    @property
    def packed(self) -> bool:
        return len({n.node_id for n in self.homes}) < len(self.homes)

    def host(self, node: RayNode) -> str:
        return self.hosts[node.node_id]


def alive_nodes() -> list[RayNode]:
    """The cluster's live nodes (needs a connected Ray)."""
    return [
        RayNode(n["NodeID"], n["NodeManagerAddress"], _HEAD_RESOURCE in n.get("Resources", {}))
        for n in ray.nodes()
        if n.get("Alive")
    ]


def bind_hosts(nodes: list[RayNode]) -> dict[str, str]:
    """Loopback if every node shares one IP (one machine), else each node's own IP."""
    one_machine = len({n.ip for n in nodes}) <= 1
    return {n.node_id: LOOPBACK if one_machine else n.ip for n in nodes}


def plan_placement(nodes: list[RayNode], authorities: int, workers: int) -> Placement:
    if not nodes:
        raise ValueError("the Ray cluster has no live node")
    if authorities < 1 or workers < 1:
        raise ValueError("need at least one authority and one worker")
    # Authorities go to worker nodes first: the head also runs GCS and the driver.
    ordered = sorted(nodes, key=lambda n: (n.is_head, n.ip, n.node_id))
    hosts = bind_hosts(nodes)
    if len(ordered) < authorities:
        homes = tuple(ordered[a % len(ordered)] for a in range(authorities))
        per_node = math.ceil(authorities / len(ordered))
        note = (
            f"{len(ordered)} Ray node(s) for {authorities} authorities: packed up to "
            f"{per_node} per node, so co-located authorities share a fault domain"
        )
        return Placement(homes, tuple((h,) * workers for h in homes), hosts, note)
    homes = tuple(ordered[:authorities])
    extras = ordered[authorities:]
    share = min(len(extras) // authorities, workers - 1)
    spread = []
    for a, home in enumerate(homes):
        mine = [home, *extras[a * share : (a + 1) * share]]
        spread.append(tuple(mine[w % len(mine)] for w in range(workers)))
    note = None
    if workers > 1 and share < workers - 1:
        note = (
            f"{len(ordered)} Ray node(s) for {authorities} authorities x {workers} workers: "
            f"each authority's workers share {share + 1} node(s)"
        )
    return Placement(homes, tuple(spread), hosts, note)


def pinned(node: RayNode) -> NodeAffinitySchedulingStrategy:
    """Hard affinity: the actor runs on `node` or not at all (its store lives there)."""
    return NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False)

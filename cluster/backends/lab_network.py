"""The Ray backend on a lab: kernel network faults and machine crashes for its authorities.

A lab (cluster/lab) is a set of network namespaces with one Ray node each; its state dir
(`NARWHAL_LAB` or the backend's `lab` argument) maps Ray node IPs to machines. Under
`network: kernel` an authority's partitions become nftables drops on its machine limited to
the workers' TCP ports (Ray's own control traffic must go on, or Ray declares the node dead
and its actors with it), loss becomes a random drop on the same ports, a bandwidth cap
`tbf`; delay and jitter stay in the transport. A machine crash kills every process of the
machine; its restart boots it again and its Ray node rejoins under a new node id.
"""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path

from cluster.lab import lab
from cluster.lab.faults import KernelFaults
from faults.scenario import ScenarioError
from worker.core.faults import ANY_PEER, FaultSettings

#: the lab's state dir, read when the backend is not given one
LAB_ENV = "NARWHAL_LAB"
#: Ray Client's port on the head: a driver outside the lab's machines joins through it
CLIENT_PORT = 10001


def lab_dir(explicit: str | Path | None = None) -> Path | None:
    """The lab to run on: the argument, else $NARWHAL_LAB, else None (no lab)."""
    value = explicit or os.environ.get(LAB_ENV)
    return Path(value) if value else None


def _refuse(detail: str) -> ScenarioError:
    return ScenarioError("kernel_network", f"network: kernel: {detail}")


class LabNetwork:
    """One lab, and which of its machines host each authority (by committee index)."""

    def __init__(self, state_dir: Path) -> None:
        self.state = lab.load(state_dir)
        self.kernel = KernelFaults(self.state)
        self.by_ip = {m.address: m.name for m in self.state.plan.machines}
        self.names: list[str] = []
        self.machines: list[tuple[str, ...]] = []
        self.ports: frozenset[int] = frozenset()

    @property
    def ray_address(self) -> str:
        """How a driver in the root namespace joins the lab's Ray (Ray Client on the head)."""
        return f"ray://{self.state.plan.head.address}:{CLIENT_PORT}"

    def machine_of(self, ip: str) -> str:
        try:
            return self.by_ip[ip]
        except KeyError:
            raise _refuse(f"Ray node {ip} is not a machine of the lab") from None

    def bind(self, names: list[str], node_ips: list[Collection[str]], ports: set[int]) -> None:
        """Authority i (named names[i]) runs on the nodes `node_ips[i]`; `ports` are every
        worker's worker-to-worker ports. Authorities must not share a machine."""
        self.names = names
        self.machines = [tuple(sorted({self.machine_of(ip) for ip in ips})) for ips in node_ips]
        self.ports = frozenset(ports)
        seen: dict[str, int] = {}
        for i, ms in enumerate(self.machines):
            for m in ms:
                if m in seen:
                    raise _refuse(
                        f"authorities {seen[m]} and {i} share lab machine {m}: a kernel fault "
                        "cannot tell them apart (give the lab one machine per authority)"
                    )
                seen[m] = i

    def _peers(self, authorities: Collection[str]) -> list[str]:
        return [m for i, n in enumerate(self.names) if n in authorities for m in self.machines[i]]

    def apply(self, index: int, settings: FaultSettings) -> None:
        """Make authority `index`'s machines carry `settings` (partitions, loss, bandwidth)."""
        blocked = self._peers(settings.blocked)
        losses = {peer: link.loss for peer, link in settings.links.items() if link.loss}
        if len(set(losses.values())) > 1:
            raise _refuse(f"one loss fraction per authority, got {sorted(set(losses.values()))}")
        loss = next(iter(losses.values()), 0.0)
        loss_peers = None if ANY_PEER in losses else self._peers(losses)
        caps = {peer: link.bandwidth for peer, link in settings.links.items() if link.bandwidth}
        if set(caps) - {ANY_PEER}:
            raise _refuse("tbf caps a machine's whole link: give bandwidth with peers: all")
        for m in self.machines[index]:
            self.kernel.set_blocked(m, blocked, ports=self.ports)
            # Like the transport's faults, loss and caps act on what the authority sends.
            self.kernel.loss(m, loss, peers=loss_peers, ports=self.ports, inbound=False)
            if ANY_PEER in caps:
                self.kernel.cap_bandwidth(m, int(caps[ANY_PEER] * 8), inbound=False)
            else:
                self.kernel.uncap_bandwidth(m)

    def crash(self, index: int) -> tuple[str, ...]:
        """Kill every process of authority `index`'s machines; the machines crashed."""
        head = self.state.plan.head.name
        if head in self.machines[index]:
            raise ScenarioError(
                "machine_crash",
                f"authority {index} runs on the lab's head machine {head} (Ray's GCS): "
                "crash another authority",
            )
        for m in self.machines[index]:
            self.kernel.crash(m)
        return self.machines[index]

    def restart(self, machine: str) -> None:
        """Boot a crashed machine again: sshd, then its Ray node joins the head."""
        self.kernel.restart(machine)

    def clear(self) -> None:
        """Every kernel fault removed (crashed machines stay down)."""
        self.kernel.clear()

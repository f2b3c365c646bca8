"""Faults in the kernel for a running lab: partitions, loss, bandwidth caps, machine crashes.

The API a scenario with `network: kernel` drives. Partitions and loss are nftables drops in
the machines' namespaces (real packets lost: TCP retransmits and times out), bandwidth caps
are `tbf` on both ends of a machine's veth, a crash kills every process of a machine's PID
namespace. Delay and jitter need `netem`, which this kernel lacks: they stay in the transport.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

from cluster.lab import fault_rules, machine, shell
from cluster.lab.plan import Machine
from cluster.lab.state import LabState


class KernelFaults:
    """Fault primitives over the machines of one lab, addressed by name (m0, m1, ...)."""

    def __init__(self, state: LabState) -> None:
        self.state = state
        self._tabled: set[str] = set()

    def _machines(self, names: Iterable[str]) -> list[Machine]:
        return [self.state.plan.machine(name) for name in names]

    def _nft(self, m: Machine, script: str) -> None:
        if not script:
            return
        if m.netns not in self._tabled:
            self._apply(m, fault_rules.table_script())
            self._tabled.add(m.netns)
        self._apply(m, script)

    def _apply(self, m: Machine, script: str) -> None:
        shell.run(["ip", "netns", "exec", m.netns, "nft", "-f", "-"], input_text=script)

    def partition(
        self, a: Collection[str], b: Collection[str], *, ports: Collection[int] | None = None
    ) -> None:
        """Cut machines `a` from machines `b` both ways (only these TCP ports if `ports`)."""
        group_a, group_b = self._machines(a), self._machines(b)
        if {m.name for m in group_a} & {m.name for m in group_b}:
            raise ValueError(f"a machine cannot be on both sides of a partition: {a} / {b}")
        for side, other in ((group_a, group_b), (group_b, group_a)):
            peers = [m.address for m in other]
            for m in side:
                self._nft(m, fault_rules.partition_script(peers, ports))

    def set_blocked(
        self, name: str, peers: Collection[str], *, ports: Collection[int] | None = None
    ) -> None:
        """Machine `name` drops everything to and from `peers` machines (these TCP ports
        only if `ports`); replaces its earlier partition rules. One side only: a symmetric
        partition sets both sides."""
        m = self.state.plan.machine(name)
        addrs = [p.address for p in self._machines(peers)]
        self._nft(
            m, fault_rules.flush_script("partition") + fault_rules.partition_script(addrs, ports)
        )

    def dropped(self, name: str) -> int:
        """Packets machine `name`'s partition rules dropped so far."""
        m = self.state.plan.machine(name)
        if m.netns not in self._tabled:
            return 0
        argv = ["ip", "netns", "exec", m.netns, "nft", "list", "table", "inet", fault_rules.TABLE]
        return fault_rules.dropped(shell.run(argv).stdout, "partition")

    def isolate(self, name: str, *, ports: Collection[int] | None = None) -> None:
        """Cut one machine from every other machine of the lab."""
        others = [m.name for m in self.state.plan.machines if m.name != name]
        self.partition([name], others, ports=ports)

    def heal(self) -> None:
        """Remove every partition rule."""
        for m in self.state.plan.machines:
            self._nft(m, fault_rules.flush_script("partition"))

    def loss(
        self,
        name: str,
        fraction: float,
        *,
        peers: Collection[str] | None = None,
        ports: Collection[int] | None = None,
        inbound: bool = True,
    ) -> None:
        """Drop a fraction of the packets out of (with `inbound`, also into) machine `name`,
        to `peers` machines and on those TCP `ports` only if given."""
        addrs = [m.address for m in self._machines(peers)] if peers else None
        script = fault_rules.loss_script(fraction, addrs, ports=ports, inbound=inbound)
        self._nft(self.state.plan.machine(name), script)

    def cap_bandwidth(self, name: str, rate_bit: int, *, inbound: bool = True) -> None:
        """Cap machine `name` at rate_bit bits/s out (its eth0) and, with `inbound`, in (its
        veth's host end)."""
        m = self.state.plan.machine(name)
        shell.run(fault_rules.tbf("eth0", rate_bit, m.netns))
        if inbound:
            shell.run(fault_rules.tbf(m.veth_host, rate_bit))

    def uncap_bandwidth(self, name: str) -> None:
        """Remove machine `name`'s bandwidth cap (no error if it had none)."""
        m = self.state.plan.machine(name)
        shell.try_run(fault_rules.tbf_clear("eth0", m.netns))
        shell.try_run(fault_rules.tbf_clear(m.veth_host))

    def crash(self, name: str) -> None:
        """Kill every process of machine `name` at once (its Ray node and all actors on it)."""
        machine.crash(self.state, name)

    def restart(self, name: str) -> None:
        """Bring a crashed machine back: same address, same state dir, sshd and (lab-run) Ray."""
        machine.restart(self.state, name)

    def clear(self) -> None:
        """Undo every network fault (crashed machines stay down)."""
        self.heal()
        for m in self.state.plan.machines:
            self._nft(m, fault_rules.flush_script("loss"))
            self.uncap_bandwidth(m.name)

"""Kernel faults as text: the nftables scripts and `tc` argv that `faults` applies.

Pure. Every rule lives in one table per machine namespace (`inet narwhal_lab`), never in the
root namespace's firewall; each fault kind has its own chains, so healing one kind is a flush
of its chains. Drops are silent (no reject): peers see timeouts and retransmits, not refusals.
"""

from __future__ import annotations

from collections.abc import Collection

TABLE = "narwhal_lab"
FAMILY = "inet"
KINDS = ("partition", "loss")
LOSS_SCALE = 1000  # loss resolution: 0.1 %


def table_script() -> str:
    """Create the table and its chains (idempotent), then (re)link the kinds' chains."""
    t = f"{FAMILY} {TABLE}"
    lines = [f"add table {t}"]
    for kind in KINDS:
        lines += [f"add chain {t} {kind}_in", f"add chain {t} {kind}_out"]
    for hook in ("input", "output"):
        lines += [
            f"add chain {t} {hook} {{ type filter hook {hook} priority 0; policy accept; }}",
            f"flush chain {t} {hook}",
        ]
        suffix = "in" if hook == "input" else "out"
        lines += [f"add rule {t} {hook} jump {kind}_{suffix}" for kind in KINDS]
    return "\n".join(lines) + "\n"


def flush_script(kind: str) -> str:
    """Remove every rule of one fault kind."""
    t = f"{FAMILY} {TABLE}"
    return f"flush chain {t} {kind}_in\nflush chain {t} {kind}_out\n"


def _set(items: Collection[str] | Collection[int]) -> str:
    return "{ " + ", ".join(str(i) for i in sorted(items)) + " }"


def partition_script(peers: Collection[str], ports: Collection[int] | None = None) -> str:
    """Drop everything to and from `peers` (addresses); only those TCP ports if `ports`.

    `ports` lets a scenario cut the workers' links and leave Ray's own control traffic alone
    (a long full partition makes Ray declare the node dead).
    """
    if not peers:
        return ""
    t = f"{FAMILY} {TABLE}"
    addrs = _set(peers)
    if not ports:
        return f"add rule {t} partition_in ip saddr {addrs} counter drop\n" + (
            f"add rule {t} partition_out ip daddr {addrs} counter drop\n"
        )
    ps = _set(ports)
    return "".join(
        f"add rule {t} partition_{chain} ip {who} {addrs} tcp {end} {ps} counter drop\n"
        for chain, who in (("in", "saddr"), ("out", "daddr"))
        for end in ("sport", "dport")
    )


def dropped(listing: str, kind: str) -> int:
    """Packets dropped by the rules of one kind's chains, read from `nft list table`."""
    total, inside = 0, False
    for line in listing.splitlines():
        words = line.split()
        if words[:1] == ["chain"]:
            inside = words[1] in (f"{kind}_in", f"{kind}_out")
        elif inside and "counter" in words and "drop" in words:
            total += int(words[words.index("packets") + 1])
    return total


def loss_script(
    fraction: float,
    peers: Collection[str] | None = None,
    *,
    ports: Collection[int] | None = None,
    inbound: bool = True,
) -> str:
    """Drop each packet out of (and, with `inbound`, into) eth0 with probability `fraction`;
    only to/from `peers` (addresses) and those TCP `ports` if set.

    Replaces any earlier loss rule: loss is a setting, not a stack.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"loss fraction must be in [0, 1], got {fraction}")
    t = f"{FAMILY} {TABLE}"
    script = flush_script("loss")
    threshold = round(fraction * LOSS_SCALE)
    if threshold == 0:
        return script
    chance = "" if threshold >= LOSS_SCALE else f"numgen random mod {LOSS_SCALE} < {threshold} "
    ways = (("in", "iifname", "saddr"), ("out", "oifname", "daddr"))
    ends = [f"tcp {end} {_set(ports)} " for end in ("sport", "dport")] if ports else [""]
    for chain, dev, who in ways if inbound else ways[1:]:
        match = f'{dev} "eth0" ' + (f"ip {who} {_set(peers)} " if peers else "")
        for end in ends:
            script += f"add rule {t} loss_{chain} {match}{end}{chance}drop\n"
    return script


def tbf(device: str, rate_bit: int, netns: str | None = None) -> list[str]:
    """`tc` argv capping `device`'s egress at rate_bit bits/s (tbf: the qdisc this kernel has)."""
    if rate_bit <= 0:
        raise ValueError(f"rate must be positive, got {rate_bit}")
    burst = max(rate_bit // 8 // 100, 32 * 1024)  # bytes: >= rate / HZ, and a few packets
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return [
        *prefix,
        "tc",
        "qdisc",
        "replace",
        "dev",
        device,
        "root",
        "tbf",
        "rate",
        f"{rate_bit}bit",
        "burst",
        str(burst),
        "latency",
        "100ms",
    ]


def tbf_clear(device: str, netns: str | None = None) -> list[str]:
    """`tc` argv removing a device's root qdisc (back to the default)."""
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return [*prefix, "tc", "qdisc", "del", "dev", device, "root"]

"""Committees of N authorities x W workers on free loopback ports, with fresh keys."""

from __future__ import annotations

import random
import socket
from collections.abc import Container, Sequence
from contextlib import ExitStack
from pathlib import Path

from worker.config import Authority, Committee, PrimaryAddress, WorkerAddresses
from worker.keys import KeyPair

#: Listening ports come from below this: the kernel hands ports from its ephemeral range
#: to outgoing connections, so a port picked there can be taken before it is bound.
_FIRST_EPHEMERAL = 32768
_LOWEST = 10_000


def _first_ephemeral_port() -> int:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return _FIRST_EPHEMERAL


def free_ports(
    count: int, host: str = "127.0.0.1", avoid: Container[int] = frozenset()
) -> list[int]:
    """Distinct ports free now, outside the ephemeral range and not in `avoid` (bound
    later by their owner).

    All are held open together while picking, so they are distinct; random picks keep
    concurrent runs on one machine apart.
    """
    high = max(_LOWEST + 1000, _first_ephemeral_port())
    rng = random.SystemRandom()
    with ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < count:
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            port = rng.randrange(_LOWEST, high)
            if port in avoid:
                continue
            try:
                sock.bind((host, port))
            except OSError:
                continue
            ports.append(port)
        return ports


def make_local_committee(
    authorities: int,
    workers: int = 1,
    host: str = "127.0.0.1",
    stakes: Sequence[int] | None = None,
    keys: Sequence[KeyPair] | None = None,
    epoch: int = 0,
) -> tuple[Committee, list[KeyPair]]:
    """Fresh keys (unless given) and a committee; authorities sorted by name, like the original."""
    if authorities < 1 or workers < 1:
        raise ValueError("need at least one authority and one worker")
    if stakes is not None and len(stakes) != authorities:
        raise ValueError(f"got {len(stakes)} stakes for {authorities} authorities")
    keys = sorted(keys or [KeyPair.generate() for _ in range(authorities)], key=lambda k: k.name)
    ports = iter(free_ports(authorities * (1 + 2 * workers), host))
    authorities = {}
    for i, key in enumerate(keys):
        authorities[key.name] = Authority(
            stake=stakes[i] if stakes is not None else 1,
            primary=PrimaryAddress(worker_to_primary=f"{host}:{next(ports)}"),
            workers={
                wid: WorkerAddresses(
                    transactions=f"{host}:{next(ports)}",
                    worker_to_worker=f"{host}:{next(ports)}",
                )
                for wid in range(workers)
            },
        )
    return Committee(epoch=epoch, authorities=authorities), keys

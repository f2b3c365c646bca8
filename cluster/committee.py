"""Committees of N authorities x W workers on free loopback ports, with fresh keys."""

from __future__ import annotations

import socket
from collections.abc import Sequence
from contextlib import ExitStack

from worker.config import Authority, Committee, PrimaryAddress, WorkerAddresses
from worker.keys import KeyPair


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the kernel just handed out (all held open together, so they are distinct)."""
    with ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind((host, 0))
            ports.append(sock.getsockname()[1])
        return ports


def make_local_committee(
    nodes: int,
    workers: int = 1,
    host: str = "127.0.0.1",
    stakes: Sequence[int] | None = None,
    keys: Sequence[KeyPair] | None = None,
    epoch: int = 0,
) -> tuple[Committee, list[KeyPair]]:
    """Fresh keys (unless given) and a committee; authorities sorted by name, like the original."""
    if nodes < 1 or workers < 1:
        raise ValueError("need at least one authority and one worker")
    if stakes is not None and len(stakes) != nodes:
        raise ValueError(f"got {len(stakes)} stakes for {nodes} authorities")
    keys = sorted(keys or [KeyPair.generate() for _ in range(nodes)], key=lambda k: k.name)
    ports = iter(free_ports(nodes * (1 + 2 * workers), host))
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

"""One authority in its own process, driven by the local backend over a pipe.

The protocol is small: the driver sends `(request id, command, args)`, the process
answers `(request id, ok, value)` (`value` is the error when not ok). Commands are
`AuthorityHost` methods and run as tasks, so a long one (an impersonation) does not
hold up the others. Request 0 is the process's own "ready", with its workers' info. A
crash is the driver killing this process; a restart is a fresh process on the same
stores and keys. The process ends on "stop", or when the driver's end of the pipe closes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import trio

from cluster.authority import AuthorityHost
from worker.config import Committee, Parameters
from worker.keys import KeyPair

READY = 0


def _commands(host: AuthorityHost) -> dict[str, Callable[..., Awaitable[Any]]]:
    async def learn(peers: dict[int, dict[str, str]]) -> None:
        host.learn(peers)

    return {
        "discover": host.discover,
        "learn": learn,
        "linked": host.linked,
        "freeze": host.freeze,
        "progress": host.progress,
        "set_faults": host.set_faults,
        "impersonate": host.impersonate,
        "drain": host.drain,
        "collect": host.collect,
        "evidence": host.evidence,
    }


def authority_process(
    committee_json: str, params_json: str, seed: bytes, store: str, conn: Connection
) -> None:
    """Entry point of one authority's process (spawned)."""
    logging.basicConfig(level=logging.WARNING)
    committee = Committee.model_validate_json(committee_json)
    params = Parameters.model_validate_json(params_json)
    try:
        trio.run(_serve, committee, params, KeyPair.generate(seed), Path(store), conn)
    except Exception as exc:  # tell the driver the cause before dying
        conn.send((READY, False, repr(exc)))
        raise


async def _serve(
    committee: Committee, params: Parameters, keypair: KeyPair, store: Path, conn: Connection
) -> None:
    async with trio.open_nursery() as nursery:
        host = AuthorityHost(committee, params, keypair, store)
        conn.send((READY, True, await host.start(nursery)))
        commands = _commands(host)
        while True:
            try:
                request, command, args = await trio.to_thread.run_sync(
                    conn.recv, abandon_on_cancel=True
                )
            except EOFError:  # the driver is gone
                break
            if command == "stop":
                conn.send((request, True, None))
                break
            nursery.start_soon(_answer, commands, conn, request, command, args)
        nursery.cancel_scope.cancel()


async def _answer(
    commands: dict[str, Callable[..., Awaitable[Any]]],
    conn: Connection,
    request: int,
    command: str,
    args: tuple[Any, ...],
) -> None:
    try:
        if command not in commands:
            raise ValueError(f"unknown command {command!r}")
        value = await commands[command](*args)
    except Exception as exc:
        conn.send((request, False, f"{command}: {exc!r}"))
    else:
        conn.send((request, True, value))

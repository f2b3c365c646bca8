"""Building the configured transport, and where its persistent state lives."""

from __future__ import annotations

from pathlib import Path

from worker.config import Committee, Parameters
from worker.keys import KeyPair
from worker.transport.base import Transport


def libp2p_key_dir(store_dir: str | Path) -> Path:
    """Beside the store (`<store>.libp2p`): a worker restarted on its store keeps its PeerId,
    and removing a store together with this directory leaves nothing behind."""
    path = Path(store_dir)
    return path.with_name(path.name + ".libp2p")


def make_transport(
    committee: Committee,
    name: str,
    worker_id: int,
    params: Parameters,
    keypair: KeyPair | None,
    key_dir: Path,
) -> Transport:
    """The configured transport, listening on the committee's worker-to-worker address."""
    if params.transport == "tcp":
        from worker.transport.tcp import TcpTransport

        return TcpTransport(committee, name, worker_id, params)
    if keypair is None or keypair.name != name:
        raise ValueError("the libp2p transport needs this authority's key pair")
    from worker.transport.libp2p.transport import Libp2pTransport

    host, port = committee.worker(name, worker_id).worker_hostport
    return Libp2pTransport(
        committee, name, worker_id, params, keypair, key_dir, listen_host=host, listen_port=port
    )

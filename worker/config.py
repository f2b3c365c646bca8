"""Committee and parameters: validated on load, with errors that name the bad field.

The shapes follow the original Narwhal config files (committee of authorities keyed
by base64 ed25519 name; parameters in bytes and milliseconds with the original's
keys and defaults) plus the testbed's own knobs, documented in docs/config.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from worker.errors import Refused
from worker.keys import KeyFileError, decode_public_key

TransportName = Literal["tcp", "libp2p"]
#: libp2p's security protocol proposed first when dialing (both are accepted).
Libp2pSecurity = Literal["tls", "noise"]
#: TLS: libp2p's Noise is fixed to ChaCha20-Poly1305, which alone would cap libp2p at 0.90
#: of TCP's knee on this testbed's 2-core VM; TLS 1.3 peers agree on AES-GCM, a third of
#: its cost there (docs/libp2p-protocol.md, "Security")
DEFAULT_LIBP2P_SECURITY: Libp2pSecurity = "tls"


class ConfigError(Refused, ValueError):
    """A configuration file that cannot be used; the message names the field."""

    source = "config"

    def __init__(self, message: str, reason: str = "invalid_config") -> None:
        super().__init__(reason, message)
        self.args = (message,)  # printed as the message alone, as before


def _parse_hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected 'host:port' with a port in 1..65535, got {value!r}")
    return host, int(port)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WorkerAddresses(_Strict):
    """Where one worker listens: clients' transactions, and its peers (same-id workers)."""

    transactions: str
    worker_to_worker: str
    libp2p: str | None = None  # multiaddr with /p2p/<PeerId>; filled once the host is up

    @field_validator("transactions", "worker_to_worker")
    @classmethod
    def _hostport(cls, value: str) -> str:
        _parse_hostport(value)
        return value

    @property
    def transactions_hostport(self) -> tuple[str, int]:
        return _parse_hostport(self.transactions)

    @property
    def worker_hostport(self) -> tuple[str, int]:
        return _parse_hostport(self.worker_to_worker)


class PrimaryAddress(_Strict):
    """The primary endpoint a worker reports its digests to (a digest collector here)."""

    worker_to_primary: str

    @field_validator("worker_to_primary")
    @classmethod
    def _hostport(cls, value: str) -> str:
        _parse_hostport(value)
        return value

    @property
    def hostport(self) -> tuple[str, int]:
        return _parse_hostport(self.worker_to_primary)


class Authority(_Strict):
    stake: int = Field(ge=0)
    primary: PrimaryAddress
    workers: dict[int, WorkerAddresses]

    @field_validator("workers")
    @classmethod
    def _ids(cls, workers: dict[int, WorkerAddresses]) -> dict[int, WorkerAddresses]:
        if not workers:
            raise ValueError("an authority needs at least one worker")
        if any(wid < 0 for wid in workers):
            raise ValueError("worker ids must be >= 0")
        return workers


class Committee(_Strict):
    """Authorities by base64 ed25519 public key ("name")."""

    epoch: int = Field(default=0, ge=0)
    authorities: dict[str, Authority]

    @field_validator("authorities")
    @classmethod
    def _names(cls, authorities: dict[str, Authority]) -> dict[str, Authority]:
        if not authorities:
            raise ValueError("the committee has no authorities")
        for name in authorities:
            try:
                decode_public_key(name)
            except KeyFileError as exc:
                raise ValueError(f"authority name is not an ed25519 public key: {exc}") from exc
        return authorities

    @model_validator(mode="after")
    def _consistency(self) -> Committee:
        if self.total_stake() == 0:
            raise ValueError("total stake is zero")
        seen: dict[str, str] = {}
        for name, auth in self.authorities.items():
            places = [("primary.worker_to_primary", auth.primary.worker_to_primary)]
            for wid, addrs in auth.workers.items():
                places.append((f"workers.{wid}.transactions", addrs.transactions))
                places.append((f"workers.{wid}.worker_to_worker", addrs.worker_to_worker))
            for field, address in places:
                where = f"authorities.{name}.{field}"
                if address in seen:
                    raise ValueError(f"duplicate address {address} at {where} and {seen[address]}")
                seen[address] = where
        return self

    # -- thresholds, exactly as the original ------------------------------------------
    def total_stake(self) -> int:
        return sum(a.stake for a in self.authorities.values())

    def stake(self, name: str) -> int:
        auth = self.authorities.get(name)
        return auth.stake if auth else 0

    def quorum_threshold(self) -> int:
        """2f+1 by stake: `2 * total // 3 + 1`."""
        return 2 * self.total_stake() // 3 + 1

    def validity_threshold(self) -> int:
        """f+1 by stake: `(total + 2) // 3`."""
        return (self.total_stake() + 2) // 3

    # -- lookups ------------------------------------------------------------------------
    def names(self) -> list[str]:
        return sorted(self.authorities)

    def worker(self, name: str, worker_id: int) -> WorkerAddresses:
        try:
            return self.authorities[name].workers[worker_id]
        except KeyError as exc:
            raise ConfigError(f"no worker {worker_id} for authority {name}") from exc

    def others(self, myself: str) -> list[str]:
        return [n for n in self.names() if n != myself]

    def peer_workers(self, myself: str, worker_id: int) -> Iterator[tuple[str, WorkerAddresses]]:
        """The same-id workers of every other authority that has one."""
        for name in self.others(myself):
            addrs = self.authorities[name].workers.get(worker_id)
            if addrs is not None:
                yield name, addrs

    def worker_ids(self) -> list[int]:
        return sorted({wid for a in self.authorities.values() for wid in a.workers})


class Parameters(_Strict):
    """Original keys and defaults (bytes, milliseconds), then the testbed's additions."""

    header_size: int = Field(default=1_000, ge=1)
    max_header_delay: int = Field(default=100, ge=1)
    gc_depth: int = Field(default=50, ge=1)
    sync_retry_delay: int = Field(default=5_000, ge=1)
    sync_retry_nodes: int = Field(default=3, ge=1)
    batch_size: int = Field(default=500_000, ge=1)
    max_batch_delay: int = Field(default=100, ge=1)
    # testbed additions (see docs/config.md)
    max_pending_batches: int = Field(default=32, ge=1)
    retry_initial_delay: int = Field(default=200, ge=1)
    retry_max_delay: int = Field(default=60_000, ge=1)
    request_timeout: int = Field(default=10_000, ge=1)
    post_quorum_delivery: int = Field(default=5_000, ge=0)
    quorum_timeout: int = Field(default=0, ge=0)  # 0: wait forever, like the original
    max_message_size: int = Field(default=8 * 1024 * 1024, ge=1024)
    max_transaction_size: int = Field(default=128 * 1024, ge=9)
    channel_capacity: int = Field(default=1_000, ge=1)
    sync_writes: bool = True
    transport: TransportName = "libp2p"
    libp2p_security: Libp2pSecurity = DEFAULT_LIBP2P_SECURITY
    #: check and hash peers' large batches in a helper thread: only worth it when the
    #: worker has a core of its own to spare (processor.py, DECODE_IN_THREAD)
    digest_in_thread: bool = False
    # limits and deadlines against stalling and exhaustion (docs/guarantees.md)
    write_timeout: int = Field(default=5_000, ge=1)
    frame_timeout: int = Field(default=10_000, ge=1)
    idle_timeout: int = Field(default=120_000, ge=0)  # 0: never
    max_client_connections: int = Field(default=64, ge=1)
    max_handshaking_connections: int = Field(default=16, ge=1)
    max_connections_per_peer: int = Field(default=2, ge=1)
    max_inflight_per_peer: int = Field(default=32, ge=1)
    max_queued_requests: int = Field(default=64, ge=1)
    max_metrics_connections: int = Field(default=8, ge=1)
    min_transaction_size: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _coherent(self) -> Parameters:
        if self.retry_max_delay < self.retry_initial_delay:
            raise ValueError("retry_max_delay must be >= retry_initial_delay")
        if self.max_message_size < self.batch_size + self.max_transaction_size + 1024:
            raise ValueError(
                "max_message_size must exceed batch_size + max_transaction_size (+1 KiB framing)"
            )
        if self.min_transaction_size > self.max_transaction_size:
            raise ValueError("min_transaction_size must be <= max_transaction_size")
        return self

    @property
    def max_batch_transactions(self) -> int:
        """The most transactions a batch can hold: it seals once `batch_size` is reached,
        so at most `batch_size // min_transaction_size` smaller ones plus the last."""
        return self.batch_size // self.min_transaction_size + 1


def _describe(exc: ValidationError, what: str, path: str | Path) -> str:
    lines = [f"invalid {what} in {path}:"]
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def _read_mapping(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_committee(path: str | Path) -> Committee:
    try:
        return Committee.model_validate(_read_mapping(path))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "committee", path)) from exc


def load_parameters(path: str | Path | None) -> Parameters:
    if path is None:
        return Parameters()
    try:
        return Parameters.model_validate(_read_mapping(path))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, "parameters", path)) from exc


def save_model(model: BaseModel, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(model.model_dump(mode="json", exclude_none=True), indent=2))

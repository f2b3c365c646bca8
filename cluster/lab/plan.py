"""The lab's plan: every name, address and path, computed before anything runs.

Pure data: `lab up` executes a plan, `lab down` and `lab status` read it back from the state
file, and tests can check it without root. All names share one prefix so that `lab down`
can also find what a crashed `lab up` left behind without a state file.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PREFIX = "nwlab"
DEFAULT_STATE_DIR = Path("/tmp/narwhal-lab")
DEFAULT_SUBNET = 0  # 10.213.<subnet>.0/24: a range that exists only inside the lab
RAY_PORT = 6379
SSH_PORT = 22
PREFIX_LEN = 24
MAX_MACHINES = 200
# Ray puts AF_UNIX sockets under <temp-dir>/session_<date>_<pid>/sockets/; the kernel caps
# such paths at 107 bytes, and the session part takes up to 64 of them.
MAX_RAY_TEMP_LEN = 40
# Linux caps interface names at 15 characters.
MAX_IFNAME_LEN = 15


@dataclass(frozen=True)
class Machine:
    """One lab machine: a network namespace with one address, one home, one Ray temp dir."""

    index: int
    name: str
    netns: str
    veth_host: str
    veth_peer: str
    address: str
    dir: Path

    @property
    def home(self) -> Path:
        """Mounted over the real home inside the machine: the launcher writes files there."""
        return self.dir / "home"

    @property
    def tmp(self) -> Path:
        """The machine's TMPDIR: Ray's launcher state and tempfiles stay per machine."""
        return self.dir / "tmp"

    @property
    def ray_temp(self) -> Path:
        """Ray's `--temp-dir`: one per machine, or the nodes' sockets would collide."""
        return self.dir / "r"

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def init_config(self) -> Path:
        return self.dir / "init.json"

    @property
    def log(self) -> Path:
        """stdout/stderr of the machine's init and sshd."""
        return self.dir / "machine.log"


@dataclass(frozen=True)
class LabPlan:
    """The whole lab: bridge, host address, machines, keys and the Ray settings."""

    state_dir: Path
    machines: tuple[Machine, ...]
    prefix: str = PREFIX
    subnet: int = DEFAULT_SUBNET
    ray_port: int = RAY_PORT
    ssh_port: int = SSH_PORT
    num_cpus: int = 2
    object_store_bytes: int = 200 * 1024 * 1024
    python_bin: Path = field(default_factory=lambda: Path(sys.executable).parent)
    real_home: Path = field(default_factory=Path.home)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}0"

    @property
    def host_address(self) -> str:
        """The root namespace's address on the bridge: how the driver reaches the lab."""
        return f"10.213.{self.subnet}.1"

    @property
    def network(self) -> str:
        return f"10.213.{self.subnet}.0/{PREFIX_LEN}"

    @property
    def head(self) -> Machine:
        return self.machines[0]

    @property
    def head_address(self) -> str:
        """What to pass to `narwhal-testbed run --address`."""
        return f"{self.head.address}:{self.ray_port}"

    @property
    def keys_dir(self) -> Path:
        return self.state_dir / "keys"

    @property
    def client_key(self) -> Path:
        """The private key the driver and the cluster launcher log in with."""
        return self.keys_dir / "id_ed25519"

    @property
    def authorized_keys(self) -> Path:
        return self.keys_dir / "id_ed25519.pub"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    @property
    def launcher_config(self) -> Path:
        return self.state_dir / "cluster.yaml"

    @property
    def launcher_tmp(self) -> Path:
        """TMPDIR of `ray up/exec/down` on the driver: the local provider keeps state there."""
        return self.state_dir / "lt"

    def machine(self, name: str) -> Machine:
        """The machine called `name` (m0, m1, ...)."""
        for machine in self.machines:
            if machine.name == name:
                return machine
        raise KeyError(f"no lab machine {name!r}; machines: {[m.name for m in self.machines]}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["state_dir"] = str(self.state_dir)
        data["python_bin"] = str(self.python_bin)
        data["real_home"] = str(self.real_home)
        data["machines"] = [{**asdict(m), "dir": str(m.dir)} for m in self.machines]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LabPlan:
        machines = tuple(Machine(**{**m, "dir": Path(m["dir"])}) for m in data["machines"])
        return cls(
            **{
                **data,
                "state_dir": Path(data["state_dir"]),
                "python_bin": Path(data["python_bin"]),
                "real_home": Path(data["real_home"]),
                "machines": machines,
            }
        )


def machine_address(subnet: int, index: int) -> str:
    """Machine i gets .(i + 2): .1 is the root namespace's end of the bridge."""
    return f"10.213.{subnet}.{index + 2}"


def make_plan(
    machines: int,
    state_dir: Path = DEFAULT_STATE_DIR,
    *,
    prefix: str = PREFIX,
    subnet: int = DEFAULT_SUBNET,
    num_cpus: int = 2,
) -> LabPlan:
    """The plan of a lab with `machines` machines; refuses names the kernel would refuse."""
    if not 1 <= machines <= MAX_MACHINES:
        raise ValueError(f"machines must be in 1..{MAX_MACHINES}, got {machines}")
    if not 0 <= subnet <= 255:
        raise ValueError(f"subnet must be in 0..255, got {subnet}")
    if not prefix.isalnum():
        raise ValueError(f"prefix must be alphanumeric, got {prefix!r}")
    state_dir = state_dir.absolute()
    planned = tuple(
        Machine(
            index=i,
            name=f"m{i}",
            netns=f"{prefix}-m{i}",
            veth_host=f"{prefix}-h{i}",
            veth_peer=f"{prefix}-p{i}",
            address=machine_address(subnet, i),
            dir=state_dir / f"m{i}",
        )
        for i in range(machines)
    )
    longest = planned[-1]
    if len(longest.veth_host) > MAX_IFNAME_LEN:
        raise ValueError(f"prefix {prefix!r} too long: {longest.veth_host} > 15 characters")
    if len(str(longest.ray_temp)) > MAX_RAY_TEMP_LEN:
        raise ValueError(
            f"state dir {state_dir} too long: Ray's temp dir {longest.ray_temp} must stay "
            f"under {MAX_RAY_TEMP_LEN} characters (its socket paths are capped)"
        )
    return LabPlan(
        state_dir=state_dir, machines=planned, prefix=prefix, subnet=subnet, num_cpus=num_cpus
    )

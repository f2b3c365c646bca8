"""What the lab runs, as argv lists and file texts: pure, so the plan can be read and tested.

The executing modules (`network`, `machine`) only feed these to `shell.run`.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from cluster.lab.plan import PREFIX_LEN, LabPlan, Machine

Argv = list[str]


def network_up(plan: LabPlan) -> list[Argv]:
    """Bridge with the host's address, then one namespace and veth pair per machine.

    No default route is added anywhere: a machine can reach the bridge's /24 and nothing else.
    """
    cmds = bridge_up(plan)
    for m in plan.machines:
        cmds += machine_network_up(plan, m)
    return cmds


def bridge_up(plan: LabPlan) -> list[Argv]:
    """The lab's bridge, holding the root namespace's address in the lab's /24."""
    return [
        ["ip", "link", "add", plan.bridge, "type", "bridge"],
        ["ip", "addr", "add", f"{plan.host_address}/{PREFIX_LEN}", "dev", plan.bridge],
        ["ip", "link", "set", plan.bridge, "up"],
    ]


def machine_network_up(plan: LabPlan, m: Machine) -> list[Argv]:
    """One machine's namespace, its eth0 (the veth's far end) with its address, and lo."""
    ns = ["ip", "-n", m.netns]
    return [
        ["ip", "netns", "add", m.netns],
        ["ip", "link", "add", m.veth_host, "type", "veth", "peer", "name", m.veth_peer],
        ["ip", "link", "set", m.veth_peer, "netns", m.netns],
        [*ns, "link", "set", m.veth_peer, "name", "eth0"],
        [*ns, "addr", "add", f"{m.address}/{PREFIX_LEN}", "dev", "eth0"],
        [*ns, "link", "set", "eth0", "up"],
        [*ns, "link", "set", "lo", "up"],
        ["ip", "link", "set", m.veth_host, "master", plan.bridge, "up"],
    ]


def keygen(path: Path, comment: str) -> Argv:
    """An ed25519 key without passphrase (a host key or the lab's client key)."""
    return ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)]


def sshd_config(plan: LabPlan, m: Machine) -> str:
    """sshd bound to the machine's address only, root by key only, nothing read from /etc/ssh."""
    return "\n".join(
        [
            f"ListenAddress {m.address}",
            f"Port {plan.ssh_port}",
            f"HostKey {m.host_key}",
            f"AuthorizedKeysFile {plan.authorized_keys}",
            f"PidFile {m.dir / 'sshd.pid'}",
            "PermitRootLogin prohibit-password",
            "PasswordAuthentication no",
            "KbdInteractiveAuthentication no",
            "UsePAM no",
            # The lab's key lives in a world-readable temp tree; the lab is single-user.
            "StrictModes no",
            "PrintMotd no",
            "UseDNS no",
            "MaxStartups 100",
            "MaxSessions 100",
            "Subsystem sftp internal-sftp",
            "",
        ]
    )


def machine_env(plan: LabPlan, m: Machine) -> dict[str, str]:
    """What a shell on the machine knows about itself (read by the launcher's start commands)."""
    return {
        "NARWHAL_LAB_MACHINE": m.name,
        "NARWHAL_LAB_ADDRESS": m.address,
        "NARWHAL_LAB_RAY_TEMP": str(m.ray_temp),
        "TMPDIR": str(m.tmp),
    }


def bashrc(plan: LabPlan, m: Machine) -> str:
    """The machine's ~/.bashrc: this checkout's Python first on PATH, plus `machine_env`.

    The cluster launcher runs every command through `bash --login -i` after sourcing it.
    """
    lines = [f"export PATH={shlex.quote(str(plan.python_bin))}:$PATH"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in machine_env(plan, m).items()]
    return "\n".join(lines) + "\n"


def profile() -> str:
    """~/.profile for login shells: defer to ~/.bashrc as Debian's default does."""
    return '[ -f "$HOME/.bashrc" ] && . "$HOME/.bashrc"\n'


def home_binds(plan: LabPlan, m: Machine) -> list[tuple[str, str]]:
    """Bind mounts that make the machine's home look like one: its own, plus the interpreter.

    The interpreter may live under the real home (pyenv); that subtree is bound into the
    machine's home first so it stays visible once the machine's home covers the real one.
    """
    binds: list[tuple[str, str]] = []
    real_home = plan.real_home.resolve()
    try:
        top = plan.python_bin.resolve().relative_to(real_home).parts[0]
    except ValueError:
        top = None
    if top is not None:
        binds.append((str(real_home / top), str(m.home / top)))
    binds.append((str(m.home), str(plan.real_home)))
    return binds


def machine_init(plan: LabPlan, m: Machine) -> Argv:
    """Start the machine: its network namespace, then fresh PID and mount namespaces.

    `unshare --fork` makes the child PID 1 of the new namespace: killing it kills every
    process of the machine, and `ray stop` inside sees only this machine's Ray.
    """
    return [
        "ip",
        "netns",
        "exec",
        m.netns,
        "unshare",
        "--pid",
        "--fork",
        "--mount-proc",
        "--propagation",
        "private",
        str(plan.python_bin / "python"),
        "-m",
        "cluster.lab.machine_init",
        str(m.init_config),
    ]


def sshd(m: Machine) -> Argv:
    """sshd in the foreground (the machine's init supervises it), logging to stderr."""
    return ["/usr/sbin/sshd", "-D", "-e", "-f", str(m.sshd_config)]


def in_machine(init_pid: int, argv: Argv, env: dict[str, str] | None = None) -> Argv:
    """Run argv inside a running machine: its network, PID and mount namespaces."""
    envs = [f"{k}={v}" for k, v in (env or {}).items()]
    enter = ["nsenter", f"--target={init_pid}", "--net", "--pid", "--mount", "--wd=/"]
    return [*enter, "--", "env", *envs, *argv] if envs else [*enter, "--", *argv]


def ray_start(plan: LabPlan, m: Machine) -> Argv:
    """`ray start` for machine m: the head on machine 0, the others joining it."""
    ray = str(plan.python_bin / "ray")
    common = [
        f"--node-ip-address={m.address}",
        f"--temp-dir={m.ray_temp}",
        f"--num-cpus={plan.num_cpus}",
        f"--object-store-memory={plan.object_store_bytes}",
        "--disable-usage-stats",
    ]
    if m.index == 0:
        return [
            ray,
            "start",
            "--head",
            f"--port={plan.ray_port}",
            "--include-dashboard=false",
            *common,
        ]
    return [ray, "start", f"--address={plan.head_address}", *common]


def ssh(plan: LabPlan, m: Machine, command: str) -> Argv:
    """Log in to machine m with the lab's key and run `command` in a login shell, as the
    cluster launcher does (the machine's ~/.bashrc puts this checkout's Ray on PATH)."""
    return [
        "ssh",
        "-i",
        str(plan.client_key),
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
        f"root@{m.address}",
        f"bash --login -c {shlex.quote(command)}",
    ]


def ray_env(plan: LabPlan, m: Machine) -> dict[str, str]:
    """Environment of a Ray node started by the lab (same as a launcher shell would have)."""
    return {**machine_env(plan, m), "HOME": str(plan.real_home), "RAY_worker_niceness": "0"}

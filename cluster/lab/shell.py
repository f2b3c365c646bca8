"""Running the lab's commands: every call bounded in time, every failure explained.

The one place the lab touches subprocess, so a timeout or a missing binary reads the same
everywhere, and `down` can run commands that are allowed to fail.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# What `lab up` needs on PATH (scripts/lab-deps.sh installs them on Debian).
REQUIRED = ("ip", "unshare", "nsenter", "nft", "tc", "ssh", "ssh-keygen", "/usr/sbin/sshd")
DEFAULT_TIMEOUT = 30.0


class LabError(RuntimeError):
    """A lab command failed or the lab cannot run on this machine."""


def missing_binaries(names: Sequence[str] = REQUIRED) -> list[str]:
    """The required binaries this machine lacks."""
    return [name for name in names if shutil.which(name) is None]


def check_can_run() -> None:
    """Raise `LabError` unless we are root and every required binary is present."""
    if os.geteuid() != 0:
        raise LabError("the lab needs root (network namespaces, bridges, nftables)")
    missing = missing_binaries()
    if missing:
        raise LabError(f"missing binaries: {', '.join(missing)} (run scripts/lab-deps.sh)")


def run(
    argv: Sequence[str],
    *,
    timeout: float = DEFAULT_TIMEOUT,
    check: bool = True,
    input_text: str | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv to completion within `timeout`; with `check`, raise `LabError` on failure."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=timeout,
            input=input_text,
            env={**os.environ, **env} if env else None,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"timed out after {timeout:.0f}s: {' '.join(argv)}") from exc
    except FileNotFoundError as exc:
        raise LabError(f"not found: {argv[0]}") from exc
    if check and done.returncode != 0:
        detail = (done.stderr or done.stdout).strip()[-2000:]
        raise LabError(f"exit {done.returncode}: {' '.join(argv)}\n{detail}")
    return done


def run_logged(argv: Sequence[str], log: Path, *, timeout: float = DEFAULT_TIMEOUT) -> None:
    """Run argv with its output appended to `log`, not to pipes.

    For commands that leave daemons behind (`ray start`): a daemon inheriting our pipe would
    keep it open, and waiting for its end would wait for the daemon.
    """
    with log.open("ab") as out:
        try:
            done = subprocess.run(
                list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=out, timeout=timeout
            )
        except subprocess.TimeoutExpired as exc:
            raise LabError(f"timed out after {timeout:.0f}s: {' '.join(argv)} (see {log})") from exc
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise LabError(f"exit {done.returncode}: {' '.join(argv)}\n{tail}")


def try_run(argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Run argv, ignoring failure (for teardown, which must go on); True if it succeeded."""
    try:
        return run(argv, timeout=timeout, check=False).returncode == 0
    except LabError:
        return False


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.1
) -> None:
    """Poll an external process's readiness until `condition()` holds, or raise at the deadline.

    Only for things we cannot be notified of (a daemon in another namespace opening a port).
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)

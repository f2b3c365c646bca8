"""PID 1 of a lab machine: make the machine's mounts, start sshd, reap orphans until told to go.

Run by `commands.machine_init` inside fresh PID and mount namespaces. It must stay alive (its
death kills the machine: that is how a crash is made) and reap every orphan, since daemons
started in the machine (Ray's) are re-parented to it. Usage: python -m ... INIT_JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path


def make_mounts(binds: list[list[str]]) -> None:
    """A private /run (sshd's privilege-separation dir), then the home bind mounts, in order."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "lab-run", "/run"], check=True)
    Path("/run/sshd").mkdir(mode=0o755)
    for src, dst in binds:
        Path(dst).mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "--rbind", src, dst], check=True)


def reap_forever() -> None:
    """Reap children until SIGTERM/SIGINT; signals are blocked and waited for, so none is lost."""
    wanted = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    while True:
        while True:
            try:
                pid, _ = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
        if signal.sigwait(wanted) != signal.SIGCHLD:
            return


def main(config_path: str) -> None:
    config = json.loads(Path(config_path).read_text())
    make_mounts(config["binds"])
    log = open(config["log"], "ab", buffering=0)  # noqa: SIM115 - lives as long as PID 1
    subprocess.Popen(config["sshd"], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    reap_forever()


if __name__ == "__main__":
    main(sys.argv[1])

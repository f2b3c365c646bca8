"""The `narwhal-testbed` command line: thin commands over the experiment flow.

`common` holds the app and its error exit, `options` the option definitions shared by
the commands, `files` the commands that write or serve files (keys, committee,
authority), `runs` the experiments (local, run) and the scenario library.
"""

from cluster.cli import files, runs
from cluster.cli.common import app

__all__ = ["app", "files", "runs"]

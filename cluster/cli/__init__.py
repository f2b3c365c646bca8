"""The `narwhal-testbed` command line: thin commands over the experiment flow.

`common` holds the app and its error exit, `options` the option definitions shared by
the commands, `files` the commands that write or serve files (keys, committee,
authority), `runs` the experiments (local, run) and the scenario library, `bench` the
knee search with the machine's ceiling and the cost figure. `lab` is the lab's own app
(cluster/lab/cli.py), mounted as a group.
"""

from cluster.cli import bench, files, runs
from cluster.cli.common import app
from cluster.lab.cli import app as lab_app

app.add_typer(lab_app, name="lab")

__all__ = ["app", "bench", "files", "runs"]

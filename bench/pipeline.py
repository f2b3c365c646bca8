"""Maximum sustainable throughput of the worker pipeline: `narwhal-testbed bench`.

Kept as a script for the README's older command lines; every argument is passed on to
the bench (the knee search per transport, the machine's ceiling, the cost figure), e.g.

    python bench/pipeline.py --transports tcp,libp2p --duration 10 --json bench.json
"""

from __future__ import annotations

import sys

from cluster.cli import app

if __name__ == "__main__":
    app(["bench", *sys.argv[1:]], prog_name="narwhal-testbed")  # exits with the bench's code

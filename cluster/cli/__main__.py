"""`python -m cluster.cli`."""

from cluster.cli import app

app()

"""The app, its error console, and the one way a command fails: one line, exit code 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from worker.config import ConfigError, Parameters, load_parameters

app = typer.Typer(
    help="Byzantine-fault testbed for the Narwhal worker layer.",
    no_args_is_help=True,
    add_completion=False,
)
err = Console(stderr=True)


def fail(message: str) -> NoReturn:
    err.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def parameters(
    path: Path | None, defaults: dict[str, Any] | None = None, **overrides: Any
) -> Parameters:
    """The parameters file (or the defaults) with the options given on the command line.
    `defaults` replace the worker's own defaults, not what the file sets."""
    try:
        base = load_parameters(path)
        values = {k: v for k, v in overrides.items() if v is not None}
        given = base.model_dump(exclude_unset=True)
        return Parameters.model_validate({**(defaults or {}), **given, **values})
    except ConfigError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"invalid parameters: {exc}")

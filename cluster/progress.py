"""Showing a run as it goes: phase notes, then a load bar with live totals (rich).

The bar is redrawn at each of the flow's ticks (once a second), not by rich's own
refresh thread (ten times a second): the driver shares the machine with the committee."""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn


class RichObserver:
    """Implements `cluster.experiment.RunObserver` on a (stderr) console."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._progress: Progress | None = None
        self._task = None

    def note(self, message: str) -> None:
        self.console.print(message)

    def load_started(self, duration: float) -> None:
        self._progress = Progress(
            TextColumn("load"),
            BarColumn(),
            TextColumn("{task.completed:.0f}/{task.total:.0f} s"),
            TextColumn("{task.fields[live]}"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
            auto_refresh=False,
        )
        self._progress.start()
        self._task = self._progress.add_task("load", total=duration, live="")

    def load_tick(self, elapsed: float, live: dict[str, int] | None) -> None:
        if self._progress is None or self._task is None:
            return
        text = ""
        if live is not None:
            text = (
                f"{live['transactions_received']:,} tx received, "
                f"{live['batches_quorum']:,} batches at quorum"
            )
        self._progress.update(self._task, completed=elapsed, live=text, refresh=True)

    def load_done(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
        self.console.print("load done; draining and collecting results")

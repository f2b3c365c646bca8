"""One hierarchy for refusals: every "no" the worker says carries a source and a reason.

`source` names the layer that refused (it is the `source` label of the
`messages_rejected` counter) and `reason` is a short snake_case code (its `reason`
label), so every rejection counter is fed from the same two fields.
"""

from __future__ import annotations

from typing import Literal

Source = Literal[
    "wire",
    "framing",
    "handshake",
    "admission",
    "intake",
    "config",
    "scenario",
    "transport",
    "processor",
]


class Refused(Exception):
    """Something refused with a reason code (a counter label), not a bug."""

    source: Source = "transport"

    def __init__(self, reason: str, detail: str = "", *, source: Source | None = None) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail
        if source is not None:
            self.source = source

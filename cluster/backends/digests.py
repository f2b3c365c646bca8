"""Collectors' digests of an authority whose collector died, kept for the checker.

A crash that takes the collector (a local authority's process, a lab machine) would lose
what the primary's side already received; the backends read it just before and merge it
with what the restarted collector reports.
"""

from __future__ import annotations

from typing import Any


def merge_digests(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Two collectors' `to_json()` digests as one."""
    out: dict[str, Any] = {}
    for kind in ("ours", "others"):
        ids = set(a.get(kind, {})) | set(b.get(kind, {}))
        out[kind] = {
            w: sorted(set(a.get(kind, {}).get(w, [])) | set(b.get(kind, {}).get(w, [])))
            for w in ids
        }
    return out

"""What a crashed authority's process knew, kept by the driver and merged back.

A crash takes the authority's whole process (a local authority process, a Ray host, a
lab machine): its collector, which stands for the primary and would have outlived a
worker crash, and its workers' quorum records, which live in memory (the batches
themselves are in LevelDB and survive). Just before the kill the backend stops the
collector and reads both (`AuthorityHost.freeze`); here they are kept and merged with
what the restarted process reports, so that the checker and the summary see every batch
that reached quorum, before the crash as after it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_digests(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Two collectors' `to_json()` digests as one."""
    out: dict[str, Any] = {}
    for kind in ("ours", "others"):
        ids = set(a.get(kind, {})) | set(b.get(kind, {}))
        out[kind] = {
            w: sorted(set(a.get(kind, {}).get(w, [])) | set(b.get(kind, {}).get(w, [])))
            for w in ids
        }
    return out


class Crashed:
    """The frozen state of every crash so far: digests by authority, records by worker."""

    def __init__(self) -> None:
        self.digests: dict[str, dict[str, Any]] = {}
        self.records: dict[tuple[str, int], list[dict[str, Any]]] = {}
        self.crashes: dict[str, int] = {}

    def keep(self, authority: str, frozen: Mapping[str, Any]) -> None:
        """`frozen`: what `AuthorityHost.freeze` returned just before the crash."""
        self.digests[authority] = merge_digests(self.digests.get(authority, {}), frozen["digests"])
        for wid, records in frozen["records"].items():
            self.records.setdefault((authority, int(wid)), []).extend(records)
        self.crashes[authority] = self.crashes.get(authority, 0) + 1

    def _before(self, entry: Mapping[str, Any]) -> list[dict[str, Any]]:
        return self.records.get((entry["authority"], entry["worker_id"]), [])

    def worker(self, result: Mapping[str, Any]) -> dict[str, Any]:
        """A worker's results with the quorum records of its earlier processes in front."""
        before = self._before(result)
        return {
            **result,
            "records": before + list(result["records"]),
            "batches_quorum": result["batches_quorum"] + len(before),
            "crashes": self.crashes.get(result["authority"], 0),
        }

    def evidence(self, evidence: Mapping[str, Any]) -> dict[str, Any]:
        return {**evidence, "records": self._before(evidence) + list(evidence["records"])}

    def collector(self, authority: str, digests: Mapping[str, Any]) -> dict[str, Any]:
        """A collector's digests with what its earlier processes had received."""
        return merge_digests(self.digests.get(authority, {}), digests)

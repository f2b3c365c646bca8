"""Cross-check what the primaries' collectors recorded against the workers' quorum records.

Every batch that reached quorum must appear as `OurBatch` at its author's collector and
as `OthersBatch` at the collector of every peer whose ack counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def check_digest_agreement(
    workers: list[Mapping[str, Any]], collectors: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """`collectors`: authority name -> CollectedDigests.to_json(). Returns counts and problems."""
    problems: list[str] = []
    checked = 0
    for w in workers:
        wid = str(w["worker_id"])
        author = collectors.get(w["authority"], {})
        ours = set(author.get("ours", {}).get(wid, []))
        for record in w["records"]:
            checked += 1
            digest = record["digest"]
            if digest not in ours:
                problems.append(f"{digest[:16]}: no OurBatch at its author {w['authority'][:8]}")
            for peer in record["acked_by"]:
                others = set(collectors.get(peer, {}).get("others", {}).get(wid, []))
                if digest not in others:
                    problems.append(f"{digest[:16]}: acked by {peer[:8]} without OthersBatch")
    return {"batches_checked": checked, "ok": not problems, "problems": problems[:20]}

"""What the driver keeps of a crashed authority's process, merged with its restart's."""

from __future__ import annotations

from cluster.backends.crashed import Crashed


def _record(digest: str) -> dict[str, object]:
    return {"digest": digest, "quorum_at": 1.0, "transactions": 10}


def test_records_and_digests_of_every_crash_come_before_the_restart_s() -> None:
    crashed = Crashed()
    crashed.keep("a", {"digests": {"ours": {"0": ["d1"]}}, "records": {0: [_record("d1")]}})
    crashed.keep("a", {"digests": {"others": {"0": ["x"]}}, "records": {"0": [_record("d2")]}})
    now = {"authority": "a", "worker_id": 0, "batches_quorum": 1, "records": [_record("d3")]}
    merged = crashed.worker(now)
    assert [r["digest"] for r in merged["records"]] == ["d1", "d2", "d3"]
    assert merged["batches_quorum"] == 3 and merged["crashes"] == 2
    evidence = crashed.evidence({**now, "stored": {}, "sent": []})
    assert [r["digest"] for r in evidence["records"]] == ["d1", "d2", "d3"]
    assert crashed.collector("a", {"ours": {"0": ["d3"]}}) == {
        "ours": {"0": ["d1", "d3"]},
        "others": {"0": ["x"]},
    }


def test_an_authority_that_never_crashed_is_left_as_it_is() -> None:
    crashed = Crashed()
    crashed.keep("a", {"digests": {}, "records": {0: [_record("d1")]}})
    other = {"authority": "b", "worker_id": 0, "batches_quorum": 1, "records": [_record("e")]}
    assert crashed.worker(other) == {**other, "crashes": 0}
    assert crashed.collector("b", {"ours": {"0": ["e"]}}) == {"ours": {"0": ["e"]}, "others": {}}

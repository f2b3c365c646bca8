"""The Byzantine decisions of worker/core/faults.py: what to send, answer and accept."""

from __future__ import annotations

from worker.core.batch_maker import SealedBatch
from worker.core.faults import (
    FLOOD_JUNK,
    Answer,
    Byzantine,
    accepts_ack,
    answer_for,
    outgoing_batch,
)
from worker.core.records import QuorumRecord, Records
from worker.wire import messages as wire

TXS = [b"\x01a", b"\x01b"]
DATA = wire.encode_batch(TXS)
HONEST = Byzantine()


def test_honest_workers_send_the_batch_to_everyone() -> None:
    assert all(outgoing_batch(HONEST, DATA, i, 3) is DATA for i in range(3))


def test_corrupting_workers_send_garbage() -> None:
    sent = outgoing_batch(Byzantine(corrupt="malformed"), DATA, 0, 3)
    assert sent != DATA and len(sent) == len(DATA)


def test_equivocators_send_another_batch_to_the_second_half() -> None:
    byz = Byzantine(equivocate=True)
    sent = [outgoing_batch(byz, DATA, i, 4) for i in range(4)]
    assert sent[0] is DATA and sent[1] is DATA
    assert sent[2] == sent[3] != DATA
    assert wire.decode(sent[2], 4096) == wire.Batch([*TXS, b"\x01equivocation"])


def test_acks_must_match_unless_equivocating() -> None:
    digest = wire.digest(DATA)
    assert accepts_ack(HONEST, digest, digest)
    assert not accepts_ack(HONEST, bytes(32), digest)
    assert not accepts_ack(HONEST, None, digest)  # a reject, or garbage
    assert accepts_ack(Byzantine(equivocate=True), bytes(32), digest)
    assert not accepts_ack(Byzantine(equivocate=True), None, digest)


def test_answers() -> None:
    digest = wire.digest(DATA)
    assert answer_for(HONEST, digest) == Answer(store=True, digest=digest, delay=0.0)
    assert answer_for(Byzantine(silent=True), digest) is None
    assert answer_for(Byzantine(forged_ack=True), digest) == Answer(False, digest, 0.0)
    wrong = answer_for(Byzantine(corrupt="wrong_digest"), digest)
    assert wrong is not None and wrong.store and wrong.digest != digest
    assert answer_for(Byzantine(slow_ack=0.5), digest) == Answer(True, digest, 0.5)


def test_flood_junk_is_refused_by_the_wire() -> None:
    try:
        wire.decode(FLOOD_JUNK, 4096)
    except wire.WireError as exc:
        assert exc.reason == "malformed"
    else:
        raise AssertionError("flood junk decoded")


def test_records_carry_wall_clock_times_and_are_capped() -> None:
    sealed = SealedBatch.of(TXS, "size", sealed_at=10.0, samples=[(7, 0.0)])
    record = QuorumRecord.of(sealed, b"\xab" * 32, ("p",), 3, now=12.0, wall=1000.0)
    assert (record.sealed_at, record.quorum_at, record.samples) == (998.0, 1000.0, (7,))
    records = Records(limit=1)
    records.keep(record)
    records.keep(record)
    assert len(records) == 1 and records.to_json()[0]["digest"] == "ab" * 32

"""The lock-free tallies export exactly what prometheus_client's own classes would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from metrics.tally import Tallies, TallyCounter, TallyGauge, TallyHistogram

BUCKETS = (0.005, 0.01, 0.1, 1.0)
OBSERVED = [0.0, 0.005, 0.007, 0.01, 0.5, 2.0, 7.5]


def _reference() -> bytes:
    r = CollectorRegistry()
    c = Counter("acks", "Acks.", ["peer"], registry=r)
    g = Gauge("in_flight", "In flight.", ["peer"], registry=r)
    h = Histogram("latency_seconds", "Latency.", ["peer"], buckets=BUCKETS, registry=r)
    for peer in ("a", "b"):
        c.labels(peer=peer).inc(3)
        g.labels(peer=peer).set(2)
        for v in OBSERVED:
            h.labels(peer=peer).observe(v)
    return generate_latest(r)


def _tallied() -> bytes:
    r = CollectorRegistry()
    tallies = Tallies()
    r.register(tallies)
    h = tallies.add(TallyHistogram("latency_seconds", "Latency.", ["peer"], BUCKETS))
    c = tallies.add(TallyCounter("acks", "Acks.", ["peer"]))
    g = tallies.add(TallyGauge("in_flight", "In flight.", ["peer"]))
    for peer in ("a", "b"):
        c.labels(peer=peer).inc(3)
        g.labels(peer=peer).set(2)
        for v in OBSERVED:
            h.labels(peer=peer).observe(v)
    return generate_latest(r)


def _families(text: bytes) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    name = ""
    for line in text.decode().splitlines():
        if line.startswith("# HELP"):
            name = line.split()[2]
        if not line.startswith("#") and "_created" not in line:
            out.setdefault(name, set()).add(line)
    return out


def test_the_same_series_and_values() -> None:
    assert _families(_tallied()) == _families(_reference())

"""Metrics for the per-request hot path: plain numbers, no lock per update.

prometheus_client's Counter, Gauge and Histogram take a lock on every update, because
any thread may update them. A worker updates its per-request figures (acks, their
latency, retries, failures, batches stored and reported) from its one trio thread, so
these keep plain Python numbers and hand them to the registry at scrape time as the same
families (names, labels, buckets) the prometheus_client classes would export. The
scraping thread only reads: a figure may be one update behind, never torn.

The series API is the subset the worker uses: `labels(**values)` then `inc`, `set` or
`observe`, so `WorkerMetrics.child` works on both kinds.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString


class _Value:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount

    def set(self, value: float) -> None:
        self.value = value


class _Buckets:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value


class _Family:
    """Series of one metric by label values, created on first use."""

    def __init__(self, name: str, doc: str, labelnames: Sequence[str]) -> None:
        self.name, self.doc, self.labelnames = name, doc, tuple(labelnames)
        self._series: dict[tuple[str, ...], object] = {}

    def labels(self, **values: str) -> object:
        key = tuple(str(values[n]) for n in self.labelnames)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = self._new()
        return series

    def _new(self) -> object:
        return _Value()

    def family(self) -> Metric:
        raise NotImplementedError


class TallyCounter(_Family):
    def family(self) -> Metric:
        out = CounterMetricFamily(self.name, self.doc, labels=self.labelnames)
        for key, series in list(self._series.items()):
            out.add_metric(key, series.value)  # type: ignore[attr-defined]
        return out


class TallyGauge(_Family):
    def family(self) -> Metric:
        out = GaugeMetricFamily(self.name, self.doc, labels=self.labelnames)
        for key, series in list(self._series.items()):
            out.add_metric(key, series.value)  # type: ignore[attr-defined]
        return out


class TallyHistogram(_Family):
    def __init__(
        self, name: str, doc: str, labelnames: Sequence[str], buckets: Iterable[float]
    ) -> None:
        super().__init__(name, doc, labelnames)
        self.bounds = tuple(sorted(b for b in buckets if b != float("inf")))

    def _new(self) -> object:
        return _Buckets(self.bounds)

    def family(self) -> Metric:
        out = HistogramMetricFamily(self.name, self.doc, labels=self.labelnames)
        for key, series in list(self._series.items()):
            counts, total = list(series.counts), series.sum  # type: ignore[attr-defined]
            cumulative, buckets = 0, []
            for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
                cumulative += count
                buckets.append((floatToGoString(bound), cumulative))
            out.add_metric(key, buckets, total)
        return out


class Tallies(Collector):
    """The tally families of one registry (register it once)."""

    def __init__(self) -> None:
        self._families: list[_Family] = []

    def add(self, family: _Family) -> _Family:
        self._families.append(family)
        return family

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            yield family.family()

"""PromQL for the dashboards, written once so every query follows the same conventions.

Counters are read through `rate(...[$__rate_interval])` (Grafana's rate interval), and
selectors are the dashboard's `scope` (its template-variable matchers). `runnable`
turns such a templated expression into plain PromQL for tests and ad-hoc queries.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

RATE = "[$__rate_interval]"

#: What `runnable` puts in place of the template variables to get runnable PromQL.
RUNNABLE_VARS = {"__rate_interval": "1m", "authority": ".*", "worker": ".*"}


def _by(labels: Sequence[str]) -> str:
    return f" by ({', '.join(labels)}) " if labels else ""


def rate(metric: str, scope: str, by: Sequence[str] = ()) -> str:
    """Per-second rate of a counter, summed over everything but `by`."""
    return f"sum{_by(by)}(rate({metric}{{{scope}}}{RATE}))"


def increase(metric: str, scope: str, by: Sequence[str] = ()) -> str:
    """Events per rate window: for rare events (handshakes) whose per-second rate reads badly."""
    return f"sum{_by(by)}(increase({metric}{{{scope}}}{RATE}))"


def gauge(metric: str, scope: str, by: Sequence[str] = (), agg: str = "sum") -> str:
    return f"{agg}{_by(by)}({metric}{{{scope}}})"


def quantile(q: float, histogram: str, scope: str, by: Sequence[str] = ()) -> str:
    """`q`-quantile of a histogram over the rate window, aggregated over all but `by`."""
    buckets = rate(f"{histogram}_bucket", scope, ("le", *by))
    return f"histogram_quantile({q}, {buckets})"


def mean(histogram: str, scope: str, by: Sequence[str] = ()) -> str:
    """Mean observation over the rate window (`_sum` / `_count`)."""
    return f"{rate(f'{histogram}_sum', scope, by)} / {rate(f'{histogram}_count', scope, by)}"


_VARIABLE = re.compile(r"\$\{(\w+)\}|\$(\w+)")
_EXACT_MATCH = re.compile(r'(\w+)="(\$\w+|\$\{\w+\})"')


def runnable(expr: str) -> str:
    """`expr` runnable as plain PromQL: variables replaced per `RUNNABLE_VARS`.

    Exact matchers on a variable (`authority="$authority"`) become `=~`, so that `.*`
    selects every series as "All" would.
    """
    expr = _EXACT_MATCH.sub(r'\1=~"\2"', expr)

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in RUNNABLE_VARS:
            raise ValueError(f"no runnable value for ${name} in {expr!r}")
        return RUNNABLE_VARS[name]

    return _VARIABLE.sub(value, expr)

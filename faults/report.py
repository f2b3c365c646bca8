"""The report of a scenario run: plan, timeline, per-second series, verdict and plots.

Written under `results/<timestamp>-<scenario>/`: `scenario.yaml` (as run, with its
seed), `plan.json` (resolved targets and fault settings), `timeline.txt`,
`series.csv`, `verdict.json`, `throughput.png` and `latency.png` with the fault
windows shaded; the timeline ends with when each step's actions really started. A
saturated run (`extra["saturated"]`, from the experiment flow) says so first in the
timeline and in the plots' titles; a run the flow had to abort gets the plan, the steps
that ran and a failing verdict naming why (`write_aborted_report`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from faults.checker import CheckResult, start_delays
from faults.plan import Step
from faults.scenario import Scenario
from faults.series import per_second


def saturation_banner(reasons: list[str]) -> str:
    """The line that keeps a saturated figure from passing for a protocol measurement."""
    return f"SATURATED: {'; '.join(reasons)} — this figure measures the testbed, not the protocol"


def _banner(extra: Mapping[str, Any] | None) -> list[str]:
    extra = extra or {}
    return [saturation_banner(extra.get("saturation", []))] if extra.get("saturated") else []


def _write_plan(out: Path, scenario: Scenario, names: list[str], steps: list[Step]) -> list[str]:
    """scenario.yaml and plan.json; returns the timeline's lines."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "scenario.yaml").write_text(yaml.safe_dump(scenario.model_dump(mode="json")))
    plan = {
        "seed": scenario.seed,
        "authorities": {i: n for i, n in enumerate(names)},
        "steps": [s.to_json() for s in steps],
    }
    (out / "plan.json").write_text(json.dumps(plan, indent=2))
    return [f"{s.at:7.2f}s  {s.op:<11} {list(s.targets)}  {s.label}" for s in steps]


def _write_verdict(
    out: Path,
    scenario: Scenario,
    ok: bool,
    why: str,
    checks: list[dict[str, Any]],
    extra: Mapping[str, Any] | None,
) -> None:
    verdict = {"scenario": scenario.name, "pass": ok, "verdict": why, "checks": checks}
    (out / "verdict.json").write_text(json.dumps({**verdict, **(extra or {})}, indent=2))


def _as_run(ran: list[dict[str, Any]]) -> list[str]:
    """The timeline's second part: when each step's actions started, by authority."""
    lines = []
    for r in ran:
        started = r.get("started", {})
        when = ", ".join(f"{i}: {t:.2f}s" for i, t in sorted(started.items())) or "nothing to do"
        late = max(start_delays(r).values(), default=0.0)
        lines.append(f"{r['planned_at']:7.2f}s  {r['op']:<11} started {when}  (+{late:.2f}s)")
    return (
        ["", "as run (action starts in plan time, by authority; lateness):", *lines]
        if lines
        else []
    )


def write_aborted_report(
    out: Path,
    scenario: Scenario,
    names: list[str],
    steps: list[Step],
    reason: str,
    ran: list[dict[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """The report of a run that could not be judged: plan, timeline, a failing verdict."""
    plan = _write_plan(out, scenario, names, steps)
    lines = [*_banner(extra), f"RUN ABORTED: {reason}", *plan, *_as_run(ran)]
    (out / "timeline.txt").write_text("\n".join(lines) + "\n")
    _write_verdict(out, scenario, False, reason, [], {"ran": ran, **(extra or {})})
    return out


def fault_windows(
    steps: list[Step], names: list[str], end: float
) -> list[tuple[float, float, str]]:
    """(start, end, label) of every crash and every non-clear fault setting, per authority."""
    windows: list[tuple[float, float, str]] = []
    crashed: dict[int, float] = {}
    faulty: dict[int, tuple[float, str]] = {}
    current: dict[int, Any] = {}
    for step in steps:
        for i in step.targets if step.op in ("crash", "restart") else []:
            if step.op == "crash" and i not in crashed:
                crashed[i] = step.at
            elif step.op == "restart" and i in crashed:
                windows.append((crashed.pop(i), step.at, f"crash {i}"))
        for i, settings in step.settings.items():
            if current.get(i) == settings:
                continue  # re-stated, unchanged: the window goes on
            current[i] = settings
            if i in faulty:
                start, label = faulty.pop(i)
                windows.append((start, step.at, label))
            if not settings.is_clear():
                faulty[i] = (step.at, f"{'+'.join(sorted(settings.active_kinds()))} {i}")
        if step.op == "impersonate":
            windows.append((step.at, step.at + 1, f"impersonate {step.targets}"))
    windows += [(t, end, f"crash {i}") for i, t in crashed.items()]
    windows += [(t, end, label) for t, label in faulty.values()]
    # one shaded band per (interval, kind), naming every authority it covers
    merged: dict[tuple[float, float, str], list[str]] = {}
    for start, stop, label in windows:
        kind, _, who = label.rpartition(" ")
        merged.setdefault((start, stop, kind), []).append(who)
    return sorted((a, b, f"{k} [{','.join(sorted(w))}]") for (a, b, k), w in merged.items())


def _plot(
    path: Path,
    series: list[dict[str, float]],
    keys: list[tuple[str, str]],
    ylabel: str,
    windows: list[tuple[float, float, str]],
    title: str,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    t = [row["t"] for row in series]
    for key, label in keys:
        ax.plot(t, [row[key] for row in series], label=label, drawstyle="steps-post")
    colours = plt.get_cmap("tab10")
    labels = sorted({w[2] for w in windows})
    for start, end, label in windows:
        colour = colours(labels.index(label) % 10)
        ax.axvspan(start, end, alpha=0.15, color=colour, label=f"fault: {label}")
    handles, names = ax.get_legend_handles_labels()
    unique = dict(zip(names, handles, strict=True))
    ax.legend(unique.values(), unique.keys(), loc="upper right", fontsize=8)
    ax.set_xlabel("seconds since load start")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    out: Path,
    scenario: Scenario,
    names: list[str],
    steps: list[Step],
    honest_records: list[Mapping[str, Any]],
    load_start: float,
    results: list[CheckResult],
    verdict: tuple[bool, str],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    lines = _banner(extra) + _write_plan(out, scenario, names, steps)
    lines += _as_run((extra or {}).get("ran", []))
    (out / "timeline.txt").write_text("\n".join(lines) + "\n")
    series = per_second(honest_records, load_start, scenario.duration)
    with (out / "series.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(series[0]))
        writer.writeheader()
        writer.writerows(series)
    ok, why = verdict
    _write_verdict(out, scenario, ok, why, [r.to_json() for r in results], extra)
    windows = fault_windows(steps, names, scenario.duration)
    title = f"{scenario.name}: {'PASS' if ok else 'FAIL'}"
    if (extra or {}).get("saturated"):
        title += " (SATURATED: measures the testbed, not the protocol)"
    _plot(
        out / "throughput.png", series, [("tps", "tx/s at quorum (honest)")], "tx/s", windows, title
    )
    _plot(
        out / "latency.png",
        series,
        [("p50_s", "seal→quorum p50"), ("p99_s", "p99")],
        "seconds",
        windows,
        title,
    )
    return out

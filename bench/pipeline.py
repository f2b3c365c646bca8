"""The worker pipeline's knee per transport, with the CPU every step cost.

A short knee search (the one of `narwhal-testbed bench`: double until a rate is not
sustained, then bisect) on the local backend, one process per authority, that prints
each step's delivered TPS, latency and the CPU-seconds of all the run's processes
(also per delivered MB and per worker-to-worker request). It starts near the knee and
bisects less than the full bench, so both transports fit in a few minutes; use
`narwhal-testbed bench` for the README's figures (ceiling, cost growth with N).

    python bench/pipeline.py --transports tcp,libp2p --duration 10
    python bench/pipeline.py --rates 20000,40000            # fixed rates, no search
    python bench/pipeline.py --min-knee tcp=56000 --min-knee libp2p=40000
    python bench/pipeline.py --security noise                # libp2p over Noise, not TLS

Exits 1 when a stated target (`--min-knee`, `--max-cpu-ms-per-request`) is missed, 0
otherwise. Run it under the heavy lock, on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any, get_args

from cluster.backends.local import LocalBackend
from cluster.bench.cost import cost_figures
from cluster.bench.knee import KneeSearch, judge_step
from cluster.bench.run import step_figures
from cluster.experiment import HARNESS_PARAMETERS, ExperimentConfig, run_experiment
from worker.config import DEFAULT_LIBP2P_SECURITY, Libp2pSecurity, Parameters


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--transports", default="tcp,libp2p")
    p.add_argument(
        "--security",
        choices=get_args(Libp2pSecurity),
        default=DEFAULT_LIBP2P_SECURITY,
        help="libp2p's security protocol (default: %(default)s)",
    )
    p.add_argument("--authorities", type=int, default=4)
    p.add_argument("--tx-size", type=int, default=512)
    p.add_argument("--duration", type=float, default=10.0, help="seconds of load per step")
    p.add_argument("--drain-timeout", type=float, default=10.0)
    p.add_argument("--start-rate", type=int, default=16_000)
    p.add_argument("--max-rate", type=int, default=512_000)
    p.add_argument("--bisect-steps", type=int, default=2)
    p.add_argument("--max-p99", type=float, default=0.5, help="p99 bound of a sustained rate")
    p.add_argument("--rates", default="", help="comma-separated fixed rates (no search)")
    p.add_argument(
        "--min-knee",
        action="append",
        default=[],
        metavar="TRANSPORT=TX_S",
        help="target: the knee of TRANSPORT is at least TX_S (repeatable)",
    )
    p.add_argument(
        "--max-cpu-ms-per-request",
        type=float,
        default=None,
        help="target: CPU-ms per worker-to-worker request at every sustained step",
    )
    p.add_argument("--json", default=None, help="also write every step here")
    return p.parse_args(argv)


def _step(args: argparse.Namespace, transport: str, rate: int) -> dict[str, Any]:
    cfg = ExperimentConfig(
        authorities=args.authorities,
        workers=1,
        rate=rate,
        tx_size=args.tx_size,
        duration=args.duration,
        params=Parameters(**HARNESS_PARAMETERS, transport=transport, libp2p_security=args.security),
        drain_timeout=args.drain_timeout,
    )
    summary = run_experiment(cfg, LocalBackend()).summary()
    reasons = judge_step(summary, args.max_p99)
    cost = cost_figures(summary)
    return {
        "transport": transport,
        **step_figures(rate, summary, reasons),
        "load_cpu_s": summary["cpu"]["load"]["run_cpu_s"],
        "run_cpu_s": cost["cpu_s"],
        "cpu_s_per_mb": cost["cpu_s_per_mb"],
        "cpu_ms_per_request": cost["cpu_ms_per_request"],
    }


def _line(step: dict[str, Any]) -> str:
    share = step["machine_share"]
    verdict = "held" if step["ok"] else "; ".join(step["reasons"])
    per_mb, per_req = step["cpu_s_per_mb"], step["cpu_ms_per_request"]
    return (
        f"{step['transport']:<7} {step['rate']:>8,} tx/s -> {step['tps']:>9,.0f} tx/s"
        f"  p50 {step['latency_p50_s'] * 1e3:>5.0f} ms  p99 {step['latency_p99_s'] * 1e3:>5.0f} ms"
        f"  CPU {step['run_cpu_s'] or 0:>6.1f} s ({step['processes']} procs,"
        f" machine {share:.0%})  {per_mb or 0:.3f} s/MB  {per_req or 0:.2f} ms/req  {verdict}"
    )


def _targets(args: argparse.Namespace) -> dict[str, int]:
    out = {}
    for item in args.min_knee:
        transport, _, rate = item.partition("=")
        out[transport.strip()] = int(rate)
    return out


def _proposed(search: KneeSearch) -> Iterator[int]:
    while (rate := search.next_rate()) is not None:
        yield rate


def main(argv: list[str]) -> int:
    args = _args(argv)
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    fixed = [int(r) for r in args.rates.split(",") if r.strip()]
    steps: list[dict[str, Any]] = []
    knees: dict[str, int] = {}
    for transport in transports:
        search = KneeSearch(args.start_rate, args.max_rate, args.bisect_steps)
        for rate in fixed or _proposed(search):
            step = _step(args, transport, rate)
            search.record(rate, step["ok"])
            steps.append(step)
            print(_line(step), flush=True)
        knees[transport] = search.knee
        print(f"{transport:<7} knee {search.knee:,} tx/s", flush=True)
    total = sum(s["run_cpu_s"] or 0 for s in steps)
    print(f"CPU of all processes over every step: {total:.1f} s (libp2p over {args.security})")
    if "tcp" in knees and "libp2p" in knees and knees["tcp"]:
        print(f"libp2p / TCP knee: {knees['libp2p'] / knees['tcp']:.2f}")
    missed = [
        f"{t} knee {knees.get(t, 0):,} < {want:,} tx/s"
        for t, want in _targets(args).items()
        if knees.get(t, 0) < want
    ]
    if args.max_cpu_ms_per_request is not None:
        missed += [
            f"{s['transport']} at {s['rate']:,} tx/s: {s['cpu_ms_per_request']} CPU-ms/request"
            f" > {args.max_cpu_ms_per_request}"
            for s in steps
            if s["ok"] and (s["cpu_ms_per_request"] or 0) > args.max_cpu_ms_per_request
        ]
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"knees": knees, "steps": steps, "missed": missed}, f, indent=1)
    for problem in missed:
        print(f"TARGET MISSED: {problem}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

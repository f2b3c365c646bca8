"""Maximum sustainable throughput of the worker pipeline on N local authorities.

Steps the input rate up for each transport and runs the experiment flow on the local
backend (one process per authority) at each step. A rate is *sustained* when delivered
TPS is within 10 % of it, the p99 sample latency stays under --max-p99 and the
collectors agree. Prints a table, the highest sustained rate per transport and the
libp2p/TCP ratio; exits non-zero when TCP is below --target or the ratio below
--min-ratio.

    python bench/pipeline.py --transports tcp,libp2p --duration 10
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from cluster.backends.local import LocalBackend
from cluster.experiment import ExperimentConfig, run_experiment
from worker.config import Parameters

RATES = "20000,30000,40000,50000,60000,70000,80000,90000,100000"


def sweep(transport: str, rates: list[int], args: argparse.Namespace) -> tuple[int, list[dict]]:
    best, rows = 0, []
    for rate in rates:
        cfg = ExperimentConfig(
            authorities=args.authorities,
            workers=args.workers,
            rate=rate,
            tx_size=args.tx_size,
            duration=args.duration,
            params=Parameters(transport=transport),
        )
        s = run_experiment(cfg, LocalBackend()).summary()
        ok = (
            s["tps"] >= 0.9 * rate
            and s["latency_p99_s"] <= args.max_p99
            and s["digest_agreement"]["ok"]
        )
        rows.append({**s, "sustained": ok})
        print(
            f"{transport:<8} {rate:>10,} {s['tps']:>10,.0f} {s['bps'] / 1e6:>8.2f} "
            f"{s['latency_p50_s'] * 1e3:>8.0f} {s['latency_p99_s'] * 1e3:>8.0f}  {ok}",
            flush=True,
        )
        if not ok:
            break
        best = rate
    return best, rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--authorities", "--nodes", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--tx-size", type=int, default=512)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--rates", default=RATES, help="comma-separated input rates (tx/s)")
    ap.add_argument("--transports", default="tcp,libp2p")
    ap.add_argument("--max-p99", type=float, default=2.0, help="seconds")
    ap.add_argument("--target", type=int, default=20_000, help="tx/s TCP must sustain")
    ap.add_argument("--min-ratio", type=float, default=0.5, help="libp2p / TCP, when both run")
    ap.add_argument("--json", type=Path, help="write every step's summary here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # clients' missed-rate warnings end a sweep anyway

    rates = [int(r) for r in args.rates.split(",")]
    transports = args.transports.split(",")
    print(f"{'':<8} {'rate tx/s':>10} {'tps':>10} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8}  ok")
    best, rows = {}, {}
    for transport in transports:
        best[transport], rows[transport] = sweep(transport, rates, args)
    failed = []
    for transport in transports:
        shape = f"{args.authorities} authorities x {args.workers}, {args.tx_size} B"
        print(f"max sustained rate, {transport} ({shape}): {best[transport]:,} tx/s")
    if best.get("tcp", args.target) < args.target:
        failed.append(f"TCP below the target of {args.target:,} tx/s")
    if "tcp" in best and "libp2p" in best and best["tcp"]:
        ratio = best["libp2p"] / best["tcp"]
        print(f"libp2p / TCP: {ratio:.2f}")
        if ratio < args.min_ratio:
            failed.append(f"libp2p/TCP ratio {ratio:.2f} below {args.min_ratio}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    for reason in failed:
        print(f"FAIL: {reason}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

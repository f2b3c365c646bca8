"""Maximum sustainable throughput of the worker pipeline on N local nodes.

Steps the input rate up and runs the local committee (one process per authority)
at each step. A rate is *sustained* when delivered TPS is within 10 % of it and the
p99 sample latency stays under --max-p99. Prints a table and the highest sustained
rate; exits non-zero when that is below --target.

    python bench/pipeline.py --transport tcp --rates 20000,40000,60000,80000 --duration 10
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cluster.local_run import LocalRunConfig, run_local
from worker.config import Parameters


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--nodes", type=int, default=4)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--tx-size", type=int, default=512)
    ap.add_argument("--duration", type=float, default=10)
    ap.add_argument("--rates", default="20000,40000,60000,80000,100000")
    ap.add_argument("--transport", choices=["tcp", "libp2p"], default="tcp")
    ap.add_argument("--max-p99", type=float, default=2.0, help="seconds")
    ap.add_argument("--target", type=int, default=20_000, help="tx/s that must be sustained")
    ap.add_argument("--json", type=Path, help="write every step's summary here")
    args = ap.parse_args(argv)

    rows = []
    best = 0
    print(f"{'rate tx/s':>10} {'tps':>10} {'MB/s':>8} {'p50 ms':>8} {'p99 ms':>8}  sustained")
    for rate in (int(r) for r in args.rates.split(",")):
        cfg = LocalRunConfig(
            nodes=args.nodes,
            workers=args.workers,
            rate=rate,
            tx_size=args.tx_size,
            duration=args.duration,
            params=Parameters(transport=args.transport),
        )
        s = run_local(cfg)
        ok = (
            s["tps"] >= 0.9 * rate
            and s["latency_p99_s"] <= args.max_p99
            and s["digest_agreement"]["ok"]
        )
        rows.append({**s, "sustained": ok})
        print(
            f"{rate:>10,} {s['tps']:>10,.0f} {s['bps'] / 1e6:>8.2f} "
            f"{s['latency_p50_s'] * 1e3:>8.0f} {s['latency_p99_s'] * 1e3:>8.0f}  {ok}",
            flush=True,
        )
        if ok:
            best = rate
        else:
            break
    shape = f"{args.transport}, {args.nodes} nodes x {args.workers}"
    print(f"max sustained rate ({shape}): {best:,} tx/s")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if best < args.target:
        print(f"FAIL: below the target of {args.target:,} tx/s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

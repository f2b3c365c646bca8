"""`narwhal-testbed bench`: the knee of each transport, the machine's ceiling for the same
work, and the CPU cost per request at several committee sizes; printed, and written as
JSON with --json. Exits 1 when a target is missed (the figures are printed either way)."""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

import typer

from cluster.cli.common import app, err, fail
from cluster.cli.options import JsonOut, TxSize, Workers
from worker.config import DEFAULT_LIBP2P_SECURITY, Libp2pSecurity


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(",") if v.strip())


@app.command()
def bench(
    authorities: Annotated[int, typer.Option(min=1, help="Authorities of the knee search.")] = 4,
    workers: Workers = 1,
    tx_size: TxSize = 512,
    transports: Annotated[str, typer.Option(help="Comma-separated: tcp, libp2p.")] = "tcp,libp2p",
    security: Annotated[
        Libp2pSecurity, typer.Option(help="libp2p's security protocol: noise or tls.")
    ] = DEFAULT_LIBP2P_SECURITY,
    duration: Annotated[float, typer.Option(min=0.5, help="Seconds of load per step.")] = 10.0,
    start_rate: Annotated[int, typer.Option(min=1, help="First rate tried (tx/s).")] = 1_000,
    max_rate: Annotated[int, typer.Option(min=1, help="Highest rate tried (tx/s).")] = 512_000,
    bisect_steps: Annotated[int, typer.Option(min=0, help="Bisection steps after doubling.")] = 3,
    max_p99: Annotated[float, typer.Option(help="p99 bound of a sustained rate (s).")] = 0.5,
    searches: Annotated[
        int,
        typer.Option(
            min=1, help="Knee searches in a row; each knee and the ratio are their medians."
        ),
    ] = 1,
    cost_authorities: Annotated[
        str, typer.Option(help="Committee sizes of the cost figure (comma-separated).")
    ] = "4,7,10",
    cost_rate: Annotated[int, typer.Option(min=1, help="Cost runs: tx/s per worker.")] = 100,
    min_ratio: Annotated[float, typer.Option(help="Target: libp2p knee / TCP knee.")] = 0.9,
    min_ceiling_fraction: Annotated[
        float, typer.Option(help="Target: libp2p knee / the machine's ceiling.")
    ] = 0.5,
    max_cost_growth: Annotated[
        float, typer.Option(help="Target: CPU per request, largest N / smallest.")
    ] = 1.5,
    quick: Annotated[
        bool, typer.Option(help="Tiny durations: the shape, not the figures.")
    ] = False,
    json_out: JsonOut = None,
) -> None:
    """Each transport's knee, against the machine's ceiling; the CPU cost per request.

    The knee search doubles the rate until it is not sustained, then bisects. A rate is
    sustained when delivered TPS is within 10 % of it and the p99 latency is within
    --max-p99; the knee is the highest sustained rate. Near the knee one p99 spike can
    decide a step, so --searches 3 repeats the search and takes medians (about three
    times as long). Run it on a quiet machine."""
    from cluster.bench.run import BenchSettings, run_bench
    from cluster.bench.targets import Targets, judge_targets

    logging.basicConfig(level=logging.ERROR)  # clients' missed-rate warnings are in the figures
    settings = BenchSettings(
        authorities=authorities,
        workers=workers,
        tx_size=tx_size,
        transports=tuple(t.strip() for t in transports.split(",") if t.strip()),
        security=security,
        duration=duration,
        start_rate=start_rate,
        max_rate=max_rate,
        bisect_steps=bisect_steps,
        max_p99_s=max_p99,
        searches=searches,
        cost_authorities=_ints(cost_authorities),
        cost_rate_per_worker=cost_rate,
    )
    settings = settings.quick() if quick else settings
    try:
        result = run_bench(
            settings, note=lambda line: err.print(line, soft_wrap=True, highlight=False)
        )
    except (RuntimeError, TimeoutError, OSError) as exc:  # a committee that did not start
        fail(f"bench stopped: {exc}")
    result["targets"] = judge_targets(
        result, Targets(min_ratio, min_ceiling_fraction, max_cost_growth)
    )
    result["ok"] = all(t["ok"] is not False for t in result["targets"])
    typer.echo(format_bench(result))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2))
        err.print(f"bench written to {json_out}")
    if not result["ok"]:
        raise typer.Exit(1)


def format_bench(b: dict[str, Any]) -> str:
    s, c = b["settings"], b["ceiling"]
    lines = [
        f"Ceiling of this machine ({c['cores']} cores; one thread each, "
        f"{c['batch_size']:,}-byte buffers):",
        f"  SHA-512 {c['hash_mb_s']:,} MB/s   synced store {c['store_mb_s']:,} MB/s "
        f"({c['store_puts_s']:,} puts/s)   loopback {c['loopback_mb_s']:,} MB/s   "
        f"{c.get('aead', 'ChaCha20-Poly1305')} {c['aead_mb_s']:,} MB/s",
    ]
    for transport, k in b["knees"].items():
        vs = k["against_ceiling"]
        capped = " (the cap: every rate tried held)" if k["capped"] else ""
        each = k.get("knees", [])
        median = f" (median of {', '.join(f'{v:,}' for v in each)})" if len(each) > 1 else ""
        lines.append(
            f"Knee {transport}: {k['knee_tx_s']:,} tx/s{median}{capped} at N={s['authorities']}, "
            f"{s['tx_size']} B; {vs['knee_fraction']:.1%} of the ceiling "
            f"({vs['ceiling_tx_s']:,} tx/s)"
        )
        for kind, f in vs["kinds"].items():
            lines.append(
                f"  {kind:<8} x{f['passes']:<2} {f['implied_mb_s']:>9,.2f} MB/s of "
                f"{f['ceiling_mb_s']:>9,} MB/s ({f['fraction']:.1%})"
            )
    if b.get("searches_at_cap"):
        lines.append(
            f"libp2p knee / TCP knee: {b['searches_at_cap']} search(es) left out, a knee there "
            f"was the cap ({s.get('max_rate', 0):,} tx/s): raise --max-rate"
        )
    if b["ratio"] is not None:
        ratios = b.get("ratios", [])
        each = f" (median of {', '.join(f'{r:.2f}' for r in ratios)})" if len(ratios) > 1 else ""
        lines.append(f"libp2p knee / TCP knee: {b['ratio']:.2f}{each}")
        if b.get("aead_only_ratio") is not None:
            lines.append(
                f"  if {c.get('aead', 'ChaCha20-Poly1305')} were libp2p's only extra cost "
                f"(TCP's knee and CPU share, the AEAD's ceiling): {b['aead_only_ratio']:.2f}"
            )
    for transport, points in b["cost"].items():
        for p in points:
            lines.append(
                f"Cost {transport:<7} N={p['authorities']:<3} at {p['input_rate']:,} tx/s: "
                f"{p['cpu_s']} CPU-s, {p['cpu_s_per_mb']} CPU-s/MB, "
                f"{p['cpu_ms_per_request']} CPU-ms/request"
                + (" (SATURATED)" if p["saturated"] else "")
            )
    for t in b["targets"]:
        mark = {True: "met", False: "MISSED", None: "not measured"}[t["ok"]]
        value = "-" if t["value"] is None else f"{t['value']:.3f}"
        lines.append(f"Target {t['name']}: {value} (target {t['target']:g}) {mark}")
    return "\n".join(lines)

"""Run the benchmarks named on the command line (default: all) and print a table."""

from __future__ import annotations

import argparse
import sys

from bench import connectors_bench, reconcile_bench, streams_bench, trace_bench, ui_bench

NAMES = ["connectors", "trace", "reconcile", "ui", "streams", "freshness"]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*NAMES, []], help="benchmarks to run")
    parser.add_argument("--rows", type=int, default=20_000, help="records per connector run")
    parser.add_argument("--preset", choices=sorted(trace_bench.PRESETS), default="small",
                        help="size of the synthetic genealogy for 'trace'")  # fmt: skip
    parser.add_argument("--samples", type=int, default=20, help="traces per measurement")
    parser.add_argument("--lots", type=int, default=100_000, help="lots for 'reconcile'")
    parser.add_argument("--events", type=int, default=20_000, help="raw events for 'streams'")
    parser.add_argument("--profile", action="store_true",
                        help="'streams': sample the faust worker with py-spy")  # fmt: skip
    parser.add_argument("--rate", type=int, default=1_000, help="'freshness': events/s")
    parser.add_argument("--seconds", type=int, default=30, help="'freshness': how long")
    parser.add_argument("--database-url", default=None,
                        help="'freshness': store URL (default: a temporary SQLite file)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=1,
                        help="'freshness': stream worker processes (one consumer group)")  # fmt: skip
    parser.add_argument("--split", action="store_true",
                        help="'freshness': --workers of role process and as many of role store")  # fmt: skip
    args = parser.parse_args()
    names = args.names or NAMES
    if "connectors" in names:
        connectors_bench.main(rows=args.rows)
    if "trace" in names:
        trace_bench.main(preset=args.preset, samples=args.samples)
    if "reconcile" in names:
        reconcile_bench.main(lots=args.lots)
    if "ui" in names:
        ui_bench.main(samples=max(3, args.samples // 2))
    if "streams" in names:
        streams_bench.main(events=args.events, profile=args.profile)
    if "freshness" in names:
        streams_bench.freshness(args.rate, args.seconds, args.database_url,
                                workers=args.workers, split=args.split)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())

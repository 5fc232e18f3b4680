"""Run the benchmarks named on the command line (default: all) and print a table."""

from __future__ import annotations

import argparse
import sys

from bench import connectors_bench

BENCHES = {"connectors": connectors_bench.main}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("names", nargs="*", choices=[*BENCHES, []], help="benchmarks to run")
    parser.add_argument("--rows", type=int, default=20_000, help="records per connector run")
    args = parser.parse_args()
    for name in args.names or list(BENCHES):
        BENCHES[name](rows=args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())

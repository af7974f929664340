"""`python -m chaos`: see the package docstring; `--help` lists the options."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from pathlib import Path

import chaos
from chaos.plan import FAULT_KINDS, parse_faults
from chaos.run import Options, run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m chaos",
        description=chaos.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--sagas", type=int, default=3000, help="order sagas to run (default 3000)")
    parser.add_argument(
        "--faults",
        default="all",
        help=f"'all' (default) or a comma-separated list, each kind optionally *N: {', '.join(FAULT_KINDS)}",
    )
    parser.add_argument(
        "--duration", type=float, default=240.0, help="seconds of placing orders and faults (default 240)"
    )
    parser.add_argument(
        "--seed", type=int, default=2026, help="fixes the orders and the fault schedule (default 2026)"
    )
    parser.add_argument(
        "--outage", type=float, default=8.0, help="longest server outage in seconds (default 8)"
    )
    parser.add_argument(
        "--slow", type=int, default=3, help="orders the warehouse answers late on purpose (default 3)"
    )
    parser.add_argument(
        "--lost", type=int, default=3, help="orders the warehouse never picks, on purpose (default 3)"
    )
    parser.add_argument("--window", type=int, default=400, help="sagas in flight at most (default 400)")
    parser.add_argument(
        "--state-dir", type=Path, default=None, help="the run's servers and logs (default .cache/chaos/<run>)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the state folder (logs) after the run")
    parser.add_argument(
        "--auto-create-topics",
        action="store_true",
        help="let the broker create topics on first use (default off, as in production)",
    )
    parser.add_argument(
        "--stall", type=float, default=180.0, help="give up waiting when no saga ended for this long"
    )
    return parser


def options(argv: list[str] | None = None) -> Options:
    parser = _parser()
    args = parser.parse_args(argv)
    if (
        args.sagas < 1
        or args.duration <= 0
        or args.outage <= 0
        or args.window < 1
        or min(args.slow, args.lost) < 0
    ):
        parser.error("--sagas, --window >= 1; --duration, --outage > 0; --slow, --lost >= 0")
    try:
        faults = parse_faults(args.faults)
    except ValueError as exc:
        parser.error(str(exc))
    return Options(
        sagas=args.sagas,
        faults=faults,
        duration_s=args.duration,
        seed=args.seed,
        outage_s=args.outage,
        slow=args.slow,
        lost=args.lost,
        window=args.window,
        state_dir=args.state_dir,
        keep=args.keep,
        auto_create_topics=args.auto_create_topics,
        stall_s=args.stall,
    )


def main() -> None:
    # SIGTERM as Ctrl-C: the run stops its processes and servers on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    chosen = options()
    try:
        report = asyncio.run(run(chosen))
    except KeyboardInterrupt:
        print("chaos: interrupted; its processes and servers are stopped", file=sys.stderr)
        sys.exit(130)
    print(report.render())
    print(report.json_line())
    sys.exit(1 if report.failed else 0)


if __name__ == "__main__":
    main()

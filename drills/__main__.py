"""`make drills`: every drill against real processes, then docs/RELIABILITY.md from this run.

    python -m drills [--short] [--only D1,D4] [--out FILE]

Two stages (a replicated pair each): D1 promotes the standby, so it gets a stage
of its own; the other drills share one, in an order that leaves it usable for
the next. D8 reads every log both stages collected.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

from drills.credentials import d5_token_expiry, d6_secret_rotation
from drills.hostile import d7_hostile
from drills.outages import Pace, d1_failover, d2_restart, d3_pause, d4_blackhole, d9_runaway
from drills.report import render
from drills.result import DrillResult
from drills.secrecy import LeakScan, d8_secrets
from drills.stage import REPO, Stage, stage

Drill = Callable[[Stage, Pace], DrillResult]


def _d7(st: Stage, pace: Pace) -> DrillResult:
    cases = 1000 if pace == Pace.full() else 300
    return d7_hostile(st, pace, api_cases=cases, sqs_bodies=cases)


# The shared stage's drills, in run order: the ones that stop or restart the server last.
SHARED: dict[str, Drill] = {
    "D9": d9_runaway,
    "D5": d5_token_expiry,
    "D6": d6_secret_rotation,
    "D7": _d7,
    "D4": d4_blackhole,
    "D2": d2_restart,
    "D3": d3_pause,
}
ALL = ["D1", *SHARED, "D8"]


def run(pace: Pace, only: list[str], progress: Callable[[str], None] = print) -> list[DrillResult]:
    """Run the chosen drills (D8 scans the logs of the others); results in D1..D9 order."""
    results: dict[str, DrillResult] = {}
    scan = LeakScan()

    def play(st: Stage, key: str, drill: Drill) -> None:
        started = time.monotonic()
        results[key] = result = drill(st, pace)
        verdict = "holds" if result.passed else f"FAILS: {'; '.join(result.failed_checks())}"
        progress(f"{key} {result.drill}: {verdict} ({time.monotonic() - started:.0f} s)")

    chosen = [key for key in SHARED if key in only]
    if chosen:
        with stage() as st:
            for key in chosen:
                play(st, key, SHARED[key])
            scan.add(st)
    if "D1" in only:
        with stage() as st:
            play(st, "D1", d1_failover)
            scan.add(st)
    if "D8" in only:
        results["D8"] = d8_secrets(scan)
        progress(f"D8 secrets stay secret: {'holds' if results['D8'].passed else 'FAILS'}")
    return [results[key] for key in sorted(results, key=lambda k: int(k[1:]))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m drills", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the short drills of `make test`")
    parser.add_argument("--only", default=",".join(ALL), help="comma-separated drill keys")
    parser.add_argument("--out", type=Path, help="report file (default: docs/RELIABILITY.md)")
    args = parser.parse_args(argv)
    only = [k.strip().upper() for k in args.only.split(",") if k.strip()]
    unknown = [k for k in only if k not in ALL]
    if unknown:
        parser.error(f"unknown drill(s): {', '.join(unknown)}; choose from {', '.join(ALL)}")
    pace = Pace.short() if args.short else Pace.full()
    started = time.monotonic()
    results = run(pace, only, progress=lambda line: print(line, flush=True))
    command = "python -m drills" + (" --short" if args.short else "")
    if only != ALL:
        command += f" --only {','.join(only)}"
    text = render(results, command=command, elapsed=time.monotonic() - started, pace=pace)
    out = args.out or (None if args.short or only != ALL else REPO / "docs" / "RELIABILITY.md")
    if out is not None:
        out.write_text(text)
        print(f"wrote {out}")
    else:
        print(text)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

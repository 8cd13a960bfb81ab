"""docs/RELIABILITY.md: one table from one run of the drills, then what each checked."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from bench.report import machine
from drills.outages import Pace
from drills.result import DrillResult


def _recovery(result: DrillResult) -> str:
    return "—" if result.recovery_s is None else f"{result.recovery_s:.2f} s"


def render(results: Sequence[DrillResult], *, command: str, elapsed: float, pace: Pace) -> str:
    lines = [
        "# Reliability drills",
        "",
        "Written by `make drills` (`python -m drills`) from the run described here; nothing",
        "in it is typed by hand. Each drill causes its fault for real: PostgreSQL",
        "processes stopped, restarted and promoted, a TCP endpoint re-pointed or",
        "black-holed, passwords changed on the server. The failure model they prove is",
        "in [database.md](database.md#when-aurora-misbehaves); `drills/` has the code, and",
        "`tests/drills/` runs the short version of each in `make test`.",
        "",
        f"- Command: `{command}` ({elapsed:.0f} s)",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        f"- Machine: {machine(tls=False)}",
        f"- Pace: warm-up {pace.warmup:g} s, settle {pace.settle:g} s after each fault; "
        "API: gunicorn, 2 workers x 4 threads, 4 client threads; Lambda: the handler "
        "in-process, batches of 10",
        "",
        "Requests counts API requests and Lambda invocations (logins for D5, log files "
        "for D8); refused, those answered 503 (or invocations that failed whole, redelivered "
        "as SQS would). Recovery is from the fault's end (the endpoint moved, the server "
        "back) to the first success of a request sent after it.",
        "",
        "| # | Drill | Load | Fault | Requests (refused) | Data lost | Recovery | Holds "
        "| Command |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        holds = "yes" if r.passed else "**no**"
        lines.append(
            f"| {r.key} | {r.drill} | {r.load} | {r.fault} | {r.requests:,} ({r.refused:,}) "
            f"| {r.lost} | {_recovery(r)} | {holds} | `python -m drills --only {r.key}` |"
        )
    lines += ["", "## What each drill checked", ""]
    for r in results:
        lines.append(f"### {r.key}: {r.drill}")
        lines.append("")
        for name, held in r.checks.items():
            lines.append(f"- [{'x' if held else ' '}] {name}")
        lines.append(f"- [{'x' if r.lost == 0 else ' '}] 0 acknowledged writes lost")
        lines.extend(f"- {note}" for note in r.notes)
        lines.append("")
    return "\n".join(lines)

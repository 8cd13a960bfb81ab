"""The command line: `python -m dataaccess doctor [--json] [--alembic-ini PATH]`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .chain import diagnose
from .report import EXIT_CODES, EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, STEPS

_EPILOG = (
    "exit status: "
    f"{EXIT_OK} every step passed (or was skipped); "
    + "; ".join(f"{code} {step} failed" for step, code in EXIT_CODES.items())
    + f"; {EXIT_USAGE} bad command line; {EXIT_INTERNAL} the doctor itself crashed"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dataaccess")
    commands = parser.add_subparsers(dest="command", required=True, metavar="command")
    doctor = commands.add_parser(
        "doctor",
        help="diagnose the database access the DB_* environment describes",
        description=f"Walk the chain from the DB_* environment to a query ({' -> '.join(STEPS)}); "
        "stop at the first broken link and say what to change. Never prints a password or token.",
        epilog=_EPILOG,
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument(
        "--alembic-ini",
        metavar="PATH",
        help="alembic.ini whose scripts the database's revision is compared with "
        "(default: $ALEMBIC_CONFIG, ./alembic.ini, the checkout's)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    report = diagnose(alembic_ini=args.alembic_ini)
    print(report.to_json() if args.json else report.render())
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())

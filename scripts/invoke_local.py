"""`make invoke`: run a Lambda handler in-process against a local PostgreSQL.

The database is one of two:

- `make run`'s, while it runs (the report, by default: it reads what the API
  and the README's examples wrote; `--database run` for any handler), logged
  in as the app role with the variables `make env` prints; left running;
- else a throwaway cluster of its own in .localpg/invoke (git-ignored; kept
  between runs, so a second run of the same batch shows its events acknowledged
  as duplicates), started, migrated and seeded with the products the sample
  events move, and stopped at the end (`--database own` forces it).

The handler runs with the DB_* environment a deployed function would have (as
the least-privilege app role, with a password instead of an IAM token) and a
fake Lambda context. A report event is moved to now first: a schedule's `time`
becomes now, and a direct payload's `since`/`until` keep their span and end now
(`--as-recorded` keeps the event's own times). The response is printed as JSON
on stdout; the handler's own JSON logs go to stdout before it.

    python -m scripts.invoke_local [--handler stock_events|report] [--event PATH]
                                   [--repeat N] [--database auto|run|own]
                                   [--as-recorded] [--dir .localpg/invoke]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

from dataaccess import Settings
from scripts.devdb import APP_ROLE
from scripts.lambda_loader import load_handler, unload
from scripts.run_local import (
    NotRunningError,
    cluster_login,
    default_dir,
    provision,
    read_env,
    start_cluster,
)

REPO = Path(__file__).resolve().parent.parent
DB_NAME = "inventory"
HANDLERS = {
    "stock_events": ("stock_events_handler", "sqs_stock_events.json"),
    "report": ("report_handler", "schedule_report.json"),
}
# The skus the sample SQS batch moves; SKU-NOPE in it stays unknown on purpose.
SEED_PRODUCTS = [("SKU-RED", "Red widget", 250, 1000), ("SKU-BLUE", "Blue widget", 300, 4)]


@dataclass
class LocalContext:
    """The parts of LambdaContext that Powertools reads."""

    function_name: str = "local-invoke"
    memory_limit_in_mb: int = 256
    invoked_function_arn: str = "arn:aws:lambda:local:000000000000:function:local-invoke"
    aws_request_id: str = ""
    # The function's timeout; the remaining time counts down from creation, as Lambda's does.
    timeout_ms: int = 60_000
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, self.timeout_ms - int((time.monotonic() - self.started) * 1000))


def lambda_environment(app: Settings) -> dict[str, str]:
    """What the template gives a deployed function, pointed at `app`'s local database."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": "local-invoke",
        "POWERTOOLS_SERVICE_NAME": os.environ.get("POWERTOOLS_SERVICE_NAME", "inventory-local"),
        **replace(app, application_name="lambda-local").to_env(),
    }


def _utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def report_event_now(event: dict[str, Any], now: dt.datetime) -> dict[str, Any]:
    """The report event as if sent `now`: a recorded window would find no recent order.

    Its times are whole seconds, as EventBridge's are, rounded up: the window
    includes what was written a moment ago.
    """
    if now.microsecond:
        now = now.replace(microsecond=0) + dt.timedelta(seconds=1)
    if "detail-type" in event:  # an EventBridge schedule: the window ends at its time
        return {**event, "time": _iso(now)}
    if event.get("since") and event.get("until"):
        span = _utc(event["until"]) - _utc(event["since"])
        return {**event, "since": _iso(now - span), "until": _iso(now)}
    return event


def choose_database(choice: str, handler: str, run_dir: Path) -> dict[str, str] | None:
    """The running `make run`'s variables, when this invoke is to use its database; else None.

    `auto` takes it for the report only: a read-only handler cannot disturb the
    data the API serves, while the sample SQS batch moves products of its own.
    """
    if choice == "own" or (choice == "auto" and handler != "report"):
        return None
    try:
        return read_env(run_dir)
    except NotRunningError:
        if choice == "run":
            raise
        return None


def invoke(module: ModuleType, name: str, event: dict[str, Any], repeat: int) -> Any:
    """Call the handler `repeat` times (one warm environment); report latencies on stderr."""
    entry = getattr(module, name)
    timings, response = [], None
    for _ in range(repeat):
        context = LocalContext(aws_request_id=secrets.token_hex(16))
        started = time.perf_counter()
        try:
            response = entry(event, context)
        except Exception as exc:
            # What the Lambda runtime would return for an unhandled error.
            response = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
        timings.append((time.perf_counter() - started) * 1000)
    if repeat > 1:
        warm = timings[1:]
        print(
            f"latency: first {timings[0]:.1f} ms (connects); warm over {len(warm)}: "
            f"median {statistics.median(warm):.2f} ms, "
            f"p95 {statistics.quantiles(warm, n=20)[-1] if len(warm) > 1 else warm[0]:.2f} ms",
            file=sys.stderr,
        )
    return response


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--handler", choices=sorted(HANDLERS), default="stock_events")
    parser.add_argument("--event", type=Path, help="event JSON (default: a sample in tests/events)")
    parser.add_argument("--repeat", type=int, default=1, help="invocations in one warm process")
    parser.add_argument(
        "--database",
        choices=["auto", "run", "own"],
        default="auto",
        help="make run's database (auto: for the report, when make run is up) or a cluster "
        "of its own",
    )
    parser.add_argument(
        "--as-recorded", action="store_true", help="keep a report event's own times"
    )
    parser.add_argument("--dir", type=Path, default=REPO / ".localpg" / "invoke")
    args = parser.parse_args(argv)
    name, sample = HANDLERS[args.handler]
    event_path = args.event or REPO / "tests" / "events" / sample
    event = json.loads(event_path.read_text())
    if args.handler == "report" and not args.as_recorded:
        event = report_event_now(event, dt.datetime.now(dt.UTC))

    try:
        running = choose_database(args.database, args.handler, default_dir().resolve())
    except NotRunningError as exc:
        print(f"make invoke: {exc}", file=sys.stderr)
        return 1
    cluster = None
    try:
        if running is not None:
            print(
                f"using the database of the running make run ({running['DB_NAME']} on "
                f"port {running['DB_PORT']})",
                file=sys.stderr,
            )
            environment = lambda_environment(Settings.from_env(running))  # the app role's
        else:
            cluster = start_cluster(args.dir)
            _, password = provision(cluster, DB_NAME, products=SEED_PRODUCTS)
            environment = lambda_environment(cluster_login(cluster, APP_ROLE, password, DB_NAME))
        os.environ.update(environment)

        module = load_handler()
        print(f"invoking handler.{name} with {event_path.name}", file=sys.stderr)
        response = invoke(module, name, event, max(1, args.repeat))
        unload(module)
        print(json.dumps(response, indent=2))
        return 1 if isinstance(response, dict) and "errorType" in response else 0
    finally:
        if cluster is not None:
            cluster.stop()


if __name__ == "__main__":
    sys.exit(main())

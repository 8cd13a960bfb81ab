"""`make invoke`: run a Lambda handler in-process against a local PostgreSQL.

A throwaway cluster in .localpg/invoke (git-ignored; kept between runs, so a
second run of the same batch shows its events acknowledged as duplicates) is
started, migrated and seeded with the products the sample events move; the
handler then runs with the DB_* environment a deployed function would have
(as the least-privilege app role, with a password instead of an IAM token)
and a fake Lambda context. The response is printed as JSON on stdout; the
handler's own JSON logs go to stdout before it. The cluster is stopped at the end.

    python -m scripts.invoke_local [--handler stock_events|report] [--event PATH]
                                   [--repeat N] [--dir .localpg/invoke]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import secrets
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from dataaccess import Settings
from scripts.devdb import APP_ROLE
from scripts.localpg import tls_env
from scripts.run_local import provision, start_cluster

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


def lambda_environment(admin: Settings, password: str, ca_file: Path | None) -> dict[str, str]:
    """What the template gives a deployed function, pointed at the local cluster."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": "local-invoke",
        "POWERTOOLS_SERVICE_NAME": os.environ.get("POWERTOOLS_SERVICE_NAME", "inventory-local"),
        "DB_HOST": admin.host,
        "DB_PORT": str(admin.port),
        "DB_NAME": admin.name,
        "DB_USER": APP_ROLE,
        "DB_AUTH": "password",
        "DB_PASSWORD": password,
        **tls_env(ca_file),
        "DB_APPLICATION_NAME": "lambda-local",
    }


def load_handler() -> ModuleType:
    """Import lambda/handler.py as the runtime does: as the top-level module `handler`."""
    spec = importlib.util.spec_from_file_location("handler", REPO / "lambda" / "handler.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["handler"] = module
    spec.loader.exec_module(module)
    return module


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
    parser.add_argument("--dir", type=Path, default=REPO / ".localpg" / "invoke")
    args = parser.parse_args(argv)
    name, sample = HANDLERS[args.handler]
    event_path = args.event or REPO / "tests" / "events" / sample
    event = json.loads(event_path.read_text())

    cluster = start_cluster(args.dir)
    try:
        admin, password = provision(cluster, DB_NAME, products=SEED_PRODUCTS)
        os.environ.update(lambda_environment(admin, password, cluster.ca_file))

        module = load_handler()
        print(f"invoking handler.{name} with {event_path.name}", file=sys.stderr)
        response = invoke(module, name, event, max(1, args.repeat))
        database = module.set_database(None)
        if database is not None:
            database.dispose()
        print(json.dumps(response, indent=2))
        return 1 if isinstance(response, dict) and "errorType" in response else 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())

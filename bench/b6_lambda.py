"""B6: warm invocations of our SQS stock-events handler vs the per-invocation connect pattern."""

from __future__ import annotations

import importlib
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3
from moto import mock_aws

from dataaccess.ingest import ingest_stock_events
from scripts.invoke_local import LocalContext
from scripts.lambda_loader import LAMBDA_DIR, load_handler

from .harness import PRODUCTS, BenchDB, Row, Sizes, alternate, median, rng, sku, timed

REPO = Path(__file__).resolve().parent.parent
REGION = "eu-west-1"
RECORDS = 10


def sqs_event(prefix: str, n: int) -> dict[str, Any]:
    r = rng(prefix)
    return {
        "Records": [
            {
                "messageId": f"{prefix}-{i}",
                "receiptHandle": f"rh-{i}",
                "body": json.dumps(
                    {
                        "event_id": f"{prefix}-{i}",
                        "sku": sku(r.randrange(PRODUCTS)),
                        "delta": r.randint(1, 5),
                        "reason": "restock",
                        "occurred_at": "2026-01-01T00:00:00Z",
                    }
                ),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:stock-events",
                "awsRegion": REGION,
            }
            for i in range(n)
        ]
    }


@contextmanager
def lambda_environment(bdb: BenchDB, secret_id: str) -> Iterator[None]:
    env = {
        "AWS_LAMBDA_FUNCTION_NAME": "stock-events",
        "AWS_REGION": REGION,
        "POWERTOOLS_SERVICE_NAME": "stock-events",
        # No per-record log lines on either side: the baseline writes none.
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "LOG_LEVEL": "WARNING",
        # No DB_USER (the secret holds the login) nor DB_REGION (AWS_REGION above).
        **replace(
            bdb.app_settings(), auth="secret", secret_id=secret_id, user=None, password=None
        ).to_env(),
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_IMPORT = """
import sys, time
sys.path[:0] = {paths!r}
start = time.perf_counter()
import {module}
print(time.perf_counter() - start)
"""


def cold_import(module: str, paths: list[str], times: int) -> float:
    """Median seconds to import `module` in a fresh interpreter."""
    samples = []
    for _ in range(times):
        out = subprocess.run(
            [sys.executable, "-c", _IMPORT.format(paths=paths, module=module)],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "AWS_REGION": REGION, "POWERTOOLS_LOG_LEVEL": "WARNING"},
        )
        samples.append(float(out.stdout.strip().splitlines()[-1]))
    return statistics.median(samples)


def run(bdb: BenchDB, sizes: Sizes) -> Row:
    context = LocalContext()
    with mock_aws():
        secret_id = "bench/db"  # noqa: S105 (a name, not a secret)
        boto3.client("secretsmanager", region_name=REGION).create_secret(
            Name=secret_id,
            SecretString=json.dumps({"username": "bench_app", "password": bdb.app_password}),
        )
        with lambda_environment(bdb, secret_id):
            ours_mod = load_handler("bench_ours_handler")
            # Imported afresh: its module-scope client is created under this run's moto.
            sys.modules.pop("bench.common_lambda", None)
            base_mod = importlib.import_module("bench.common_lambda")
            ours_events = [sqs_event(f"ours-{i}", RECORDS) for i in range(sizes.invocations * 3)]
            base_events = [sqs_event(f"base-{i}", RECORDS) for i in range(sizes.invocations * 3)]

            def ours_op(i: int) -> None:
                result = ours_mod.stock_events_handler(ours_events[i], context)
                assert not result["batchItemFailures"], result

            def base_op(i: int) -> None:
                result = base_mod.handler(base_events[i], context)
                assert not result["batchItemFailures"], result

            batch_events = [sqs_event(f"batch-{i}", RECORDS) for i in range(sizes.invocations)]

            def batch_op(i: int) -> None:
                # What the handler would cost on the package's batch path: same module-scope
                # Database, one unit of work for the whole batch.
                parsed = [ours_mod.parse_stock_event(r["body"]) for r in batch_events[i]["Records"]]
                with ours_mod.get_database().unit_of_work() as uow:
                    assert not ingest_stock_events(uow, parsed).rejected

            counters = {"ours": 0, "base": 0, "batch": 0}

            def side(op: Any, key: str) -> Any:
                def go(n: int) -> list[float]:
                    start = counters[key]
                    counters[key] += n
                    return timed(lambda i: op(start + i), n)

                return go

            try:
                ours, base = alternate(
                    side(ours_op, "ours"),
                    side(base_op, "base"),
                    total=sizes.invocations,
                    rounds=sizes.rounds,
                )
                batch, _ = alternate(
                    side(batch_op, "batch"),
                    side(base_op, "base"),
                    total=sizes.invocations // 2,
                    rounds=sizes.rounds,
                )
            finally:
                database = ours_mod.set_database(None)
                if database is not None:
                    database.dispose()
                sys.modules.pop(ours_mod.__name__, None)
    ours_import = cold_import("handler", [str(LAMBDA_DIR), str(REPO)], sizes.imports)
    base_import = cold_import("bench.common_lambda", [str(REPO)], sizes.imports)
    ours_ms, base_ms = median(ours) * 1e3, median(base) * 1e3
    batch_ms = median(batch) * 1e3
    return Row(
        key="B6",
        workload=f"Lambda stock-events handler, {sizes.invocations} warm invocations "
        f"of a {RECORDS}-record batch",
        ours=ours_ms,
        baseline=base_ms,
        unit="ms per invocation, median",
        goal="≥ 10x faster per invocation (ratio ≤ 0.1); cold import of both reported",
        better="lower",
        limit=0.1,
        notes=[
            f"speed-up: {base_ms / ours_ms:.1f}x.",
            f"the package's batch path alone (`dataaccess.ingest` on the same warm Database, "
            f"no handler): {batch_ms:.2f} ms per invocation; the rest of ours is the "
            f"handler's parsing, validation and logging.",
            f"cold import (fresh interpreter, median of {sizes.imports}): ours "
            f"`lambda/handler.py` {ours_import * 1e3:.0f} ms, baseline {base_import * 1e3:.0f} ms.",
            "ours: `handler.stock_events_handler`: module-scope Database built on first use, "
            "DB_AUTH=secret cached, one pooled connection; the batch's events applied "
            "set-based in one unit of work (`dataaccess.ingest`), rejected records reported "
            "in batchItemFailures.",
            "baseline: bench/common_lambda.py: per invocation `get_secret_value` + "
            "`psycopg2.connect`, one transaction per record, close.",
            "Secrets Manager is moto in-process (no network) and PostgreSQL is on loopback, "
            "so the baseline's per-invocation setup (a secret read and a TLS login) is far "
            "cheaper here than in AWS, where the secret is an HTTPS call and the login "
            "crosses the network.",
        ],
        extra={
            "batch_ms": batch_ms,
            "ours_import_ms": ours_import * 1e3,
            "base_import_ms": base_import * 1e3,
        },
    )

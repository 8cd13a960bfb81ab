"""X-Ray tracing of the handlers: off by default, without importing the X-Ray SDK; on,
a subsegment per unit of work, per statement and per new connection, and never a value.

Each case runs in a fresh interpreter: a new execution environment, and the X-Ray SDK's
process-wide recorder (and Powertools' Tracer configuration) stay out of this one.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from typing import Any

import pytest

from tests.lambda_.helpers import REPO, sqs_event, stock_body

# Imports the handler from its file, as Lambda does, and says what tracing it got.
IMPORT_ONLY = """
import json, sys
from scripts.lambda_loader import load_fresh_handler
handler = load_fresh_handler()
print(json.dumps({"tracer": handler.tracer is not None, "xray_sdk": "aws_xray_sdk" in sys.modules}))
"""

# Invokes the handler once per (handler name, event) in argv[1], each under its own
# sampled trace id, as Lambda does, and prints what each invocation sent to X-Ray. The
# emitter stands in for the daemon the Lambda runtime listens with.
TRACED_INVOCATIONS = """
import json, os, sys
from aws_xray_sdk.core import xray_recorder
from scripts.invoke_local import LocalContext
from scripts.lambda_loader import load_fresh_handler

class Emitter:
    sent = []
    def send_entity(self, entity):
        self.sent.append(json.loads(entity.serialize()))
    def set_daemon_address(self, address):
        pass

handler = load_fresh_handler()
emitter = Emitter()
xray_recorder.configure(emitter=emitter)
runs = []
for i, (name, event) in enumerate(json.loads(sys.argv[1])):
    os.environ["_X_AMZN_TRACE_ID"] = (
        f"Root=1-6759e988-bd862e3fe1be46a9942{i:05d};Parent=53995c3f42cd8ad8;Sampled=1"
    )
    emitter.sent = []
    try:
        result = getattr(handler, name)(event, LocalContext())
    except Exception as exc:
        result = {"raised": type(exc).__name__}
    runs.append({"result": result, "sent": emitter.sent})
# When the server started the backend of the (one, pooled) connection: during its login.
emitter.sent = []
with handler.get_database().writer.connect() as connection:
    backend_start = connection.exec_driver_sql(
        "SELECT extract(epoch FROM backend_start)::float FROM pg_stat_activity"
        " WHERE pid = pg_backend_pid()"
    ).scalar_one()
print(json.dumps({"runs": runs, "backend_start": backend_start}))
"""

IN_LAMBDA = {"LAMBDA_TASK_ROOT": "/var/task"}


def run_python(code: str, env: dict[str, str], *args: str) -> Any:
    """Run `code` in a fresh interpreter from the repository; its stdout's JSON."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "LAMBDA_"))}
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=REPO,
        env={**clean, "PYTHONPATH": str(REPO), **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    ("env", "traced"),
    [
        ({}, False),  # tests, local runs: not in Lambda
        ({**IN_LAMBDA, "POWERTOOLS_TRACE_DISABLED": "true"}, False),  # Tracing=PassThrough
        (IN_LAMBDA, True),  # Tracing=Active
    ],
)
def test_the_xray_sdk_is_imported_only_when_tracing_is_on(env, traced):
    assert run_python(IMPORT_ONLY, env) == {"tracer": traced, "xray_sdk": traced}


def flatten(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every subsegment sent, nested ones included (streamed ones arrive on their own)."""
    found = []
    todo = list(entities)
    while todo:
        entity = todo.pop()
        found.append(entity)
        todo.extend(entity.get("subsegments", []))
    return found


def named(subsegments: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [s for s in subsegments if s["name"] == name]


def children(subsegments: list[dict[str, Any]], parent: dict[str, Any]) -> list[dict[str, Any]]:
    """The subsegments under `parent`: streamed with its id, or nested in it."""
    nested = parent.get("subsegments", [])
    return [s for s in subsegments if s.get("parent_id") == parent["id"] or s in nested]


@pytest.fixture
def traced_env(handler_env: dict[str, str]) -> dict[str, str]:
    """A deployed function's environment (this test's database) with tracing on."""
    return {**handler_env, **IN_LAMBDA, "POWERTOOLS_SERVICE_NAME": "stock-events"}


def test_traced_invocations_show_each_unit_of_work_statement_and_connection(
    traced_env, seeded, app_settings
):
    marker = f"marker-{secrets.token_hex(8)}"
    plan = [
        (
            "stock_events_handler",
            sqs_event(
                stock_body(f"{marker}-1", "SKU-RED", 2, reason=marker),
                stock_body(f"{marker}-2", "SKU-NOPE", 1, reason=marker),
                "not json",
            ),
        ),
        ("stock_events_handler", sqs_event(stock_body(f"{marker}-3", "SKU-BLUE", 1))),
        ("report_handler", {"threshold": 6}),
    ]

    output = run_python(TRACED_INVOCATIONS, traced_env, json.dumps(plan))
    cold, warm, report = output["runs"]

    database = f"{app_settings.name}@{app_settings.host}"
    assert [f["itemIdentifier"] for f in cold["result"]["batchItemFailures"]] == [
        "msg-0001",
        "msg-0002",
    ]
    sent = flatten(cold["sent"])
    (ingest,) = named(sent, "## ingest_stock_events")
    assert ingest["annotations"]["records"] == 2  # the malformed record never reached it
    assert not ingest.get("fault")
    statements = [s for s in children(sent, ingest) if s["name"] == database]
    assert statements
    for statement in statements:
        assert statement["namespace"] == "remote"
        assert statement["sql"]["database_type"] == "PostgreSQL"
        assert statement["sql"]["sanitized_query"].strip()
    # Cold: one new connection, inside the unit of work that needed it, spanning the login
    # (the server started its backend in between) and ending before the first statement.
    (connect,) = named(sent, f"connect {database}")
    assert connect in children(sent, ingest)
    assert connect["start_time"] < output["backend_start"] < connect["end_time"]
    assert connect["end_time"] <= min(s["start_time"] for s in statements)

    sent = flatten(warm["sent"])
    (ingest,) = named(sent, "## ingest_stock_events")
    assert [s for s in children(sent, ingest) if s["name"] == database]
    assert not named(sent, f"connect {database}"), "a warm invocation reuses its connection"

    sent = flatten(report["sent"])
    (unit,) = named(sent, "## report")
    assert [s for s in children(sent, unit) if s["name"] == database]
    assert report["result"]["low_stock"]["threshold"] == 6

    # Statements travel with placeholders: no event id, reason or sku value in a trace.
    everything = json.dumps([r["sent"] for r in (cold, warm, report)])
    assert marker not in everything
    assert "SKU-NOPE" not in everything


def test_a_failing_batch_is_a_fault_named_by_class_never_by_its_values(traced_env, seeded):
    secret = f"secret-{secrets.token_hex(8)}"
    # A NUL byte passes the validator; the driver refuses the set-based statement, and
    # the per-record fallback then fails this record alone.
    poison = stock_body("poison", "SKU-RED", 1, reason=f"restock\x00{secret}")
    plan = [("stock_events_handler", sqs_event(stock_body("good", "SKU-RED", 1), poison))]

    (run,) = run_python(TRACED_INVOCATIONS, traced_env, json.dumps(plan))["runs"]

    assert [f["itemIdentifier"] for f in run["result"]["batchItemFailures"]] == ["msg-0001"]
    sent = flatten(run["sent"])
    (ingest,) = named(sent, "## ingest_stock_events")
    # The driver refuses the NUL byte (ValueError): the statement and its unit of work are
    # faults, annotated with the error's class, which is all _describe gives of it.
    assert ingest["fault"] is True
    assert ingest["annotations"]["error"] == "ValueError"
    (statement,) = [s for s in children(sent, ingest) if s.get("fault")]
    assert statement["namespace"] == "remote"
    assert statement["annotations"]["error"] == "ValueError"
    per_record = named(sent, "## apply_stock_event")
    assert len(per_record) == 2
    assert [bool(s.get("fault")) for s in per_record].count(True) == 1
    assert secret not in json.dumps(run["sent"])
    assert not [s for s in sent if "cause" in s], "no exception text is recorded"

"""Helpers for the Lambda tests: recorded events, a deployed function's environment."""

from __future__ import annotations

import json
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from dataaccess import Database, Settings, services

REPO = Path(__file__).resolve().parents[2]
EVENTS = REPO / "tests" / "events"
# The products the recorded SQS batch moves (SKU-NOPE stays unknown on purpose).
SEEDED_STOCK = {"SKU-RED": 5, "SKU-BLUE": 5}


def load_event(name: str) -> dict[str, Any]:
    """A recorded event from tests/events/."""
    return json.loads((EVENTS / name).read_text())


def lambda_env(settings: Settings) -> dict[str, str]:
    """The environment a deployed function would have, pointing at `settings`' database."""
    return {
        "AWS_LAMBDA_FUNCTION_NAME": "stock-events-test",
        **replace(settings, application_name=f"lambda-test-{secrets.token_hex(4)}").to_env(),
    }


def sqs_event(*bodies: str) -> dict[str, Any]:
    """An SQS batch with these bodies, shaped like the recorded one."""
    template = load_event("sqs_stock_events.json")["Records"][0]
    return {
        "Records": [
            {**template, "messageId": f"msg-{i:04d}", "body": body} for i, body in enumerate(bodies)
        ]
    }


def stock_body(event_id: str, sku: str, delta: int, reason: str = "restock") -> str:
    """A well-formed stock event body."""
    return json.dumps(
        {
            "event_id": event_id,
            "sku": sku,
            "delta": delta,
            "reason": reason,
            "occurred_at": "2024-06-03T08:00:00+00:00",
        }
    )


def stock(db: Database, sku: str) -> int:
    """Current stock of one product, read on the writer."""
    with db.unit_of_work() as uow:
        return services.get_product(uow, sku).stock


def failed_ids(response: dict[str, Any]) -> list[str]:
    """The message ids a partial batch response asks SQS to redeliver."""
    return sorted(item["itemIdentifier"] for item in response["batchItemFailures"])


def count_connect_attempts(engine: sa.Engine, monkeypatch: Any) -> list[int]:
    """A list that grows by one for each attempt (failed or not) to open a connection."""
    attempts: list[int] = []
    connect = engine.dialect.connect

    def counting(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        return connect(*args, **kwargs)

    # On this engine's dialect only; the engine's do_connect hook calls dialect.connect.
    monkeypatch.setattr(engine.dialect, "connect", counting)
    return attempts

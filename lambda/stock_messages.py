"""The stock-events queue's messages: SQS records, and their bodies validated into events.

Each record body is one JSON stock event (docs/lambda.md, "Stock events"); a body
that is not one fails its own record with `MalformedEventError`, whose message
names the field, never its value.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from dataaccess.records import StockEventIn
from failures import MalformedEventError

MAX_EVENT_ID = 200
MAX_SKU = 64
MAX_REASON = 500


@dataclass(frozen=True, slots=True)
class SqsRecord:
    """The two fields of an SQS record the handler reads.

    (Read from the event's dicts directly, not through Powertools' SQSEvent: importing
    its event data classes costs a cold start ~10 ms, docs/lambda.md "Cold start".)
    """

    message_id: str
    body: str


def sqs_records(event: dict[str, Any]) -> list[SqsRecord]:
    """The records of an SQS event, in delivery order."""
    return [SqsRecord(record["messageId"], record["body"]) for record in event["Records"]]


def parse_stock_event(body: str) -> StockEventIn:
    """Validate a record body into a StockEventIn; raise MalformedEventError naming the field."""
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        # Very deep nesting ("[" * 100000) makes json.loads give up with RecursionError.
        raise MalformedEventError("body is not valid JSON") from None
    if not isinstance(data, dict):
        raise MalformedEventError("body must be a JSON object")
    delta = data.get("delta")
    if not isinstance(delta, int) or isinstance(delta, bool):
        raise MalformedEventError("delta must be an integer")
    return StockEventIn(
        event_id=_text(data, "event_id", MAX_EVENT_ID),
        sku=_text(data, "sku", MAX_SKU),
        delta=delta,
        reason=_text(data, "reason", MAX_REASON),
        occurred_at=timestamp(data.get("occurred_at"), "occurred_at", MalformedEventError),
    )


def _text(data: dict[str, Any], name: str, max_len: int) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise MalformedEventError(f"{name} must be a non-empty string")
    if len(value) > max_len:
        raise MalformedEventError(f"{name} must be at most {max_len} characters")
    return value


def timestamp(value: Any, name: str, error: type[ValueError]) -> dt.datetime:
    """An ISO 8601 timestamp with a timezone (stock events, report windows); `error` names it."""
    if not isinstance(value, str):
        raise error(f"{name} must be an ISO 8601 timestamp with a timezone")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise error(f"{name} must be an ISO 8601 timestamp with a timezone") from None
    if parsed.tzinfo is None:
        raise error(f"{name} must carry a timezone (e.g. Z or +00:00)")
    return parsed

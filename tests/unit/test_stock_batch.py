"""The stock-events batch's bookkeeping (lambda/stock_batch.py) on its own: which records
are acknowledged, which fail and how each is logged, and the response SQS reads. No
Database, no PostgreSQL: `settle` maps an `IngestResult` back to message ids."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

from dataaccess.errors import InsufficientStockError, ProductNotFoundError
from dataaccess.ingest import IngestResult, RejectedEvent
from dataaccess.records import StockEventIn
from scripts.lambda_loader import function_module, load_fresh_handler

stock_batch = function_module("stock_batch")
stock_messages = function_module("stock_messages")
failures = function_module("failures")
SqsRecord = stock_messages.SqsRecord
AT = dt.datetime(2024, 6, 3, 8, tzinfo=dt.UTC)


class Lines:
    """A logger that keeps what it is given (the seam `stock_batch.Log`)."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.lines.append(("INFO", msg, kwargs.get("extra", {})))

    def warning(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.lines.append(("WARNING", msg, kwargs.get("extra", {})))

    def error(self, msg: str, *args: Any, **kwargs: Any) -> None:
        self.lines.append(("ERROR", msg, kwargs.get("extra", {})))


def parsed(*pairs: tuple[str, str]) -> list[tuple[Any, StockEventIn]]:
    """(message id, event id) pairs as parsed records of SKU-RED."""
    return [
        (SqsRecord(message_id, "{}"), StockEventIn(event_id, "SKU-RED", 1, "restock", AT))
        for message_id, event_id in pairs
    ]


def test_a_handler_loaded_from_its_path_can_define_and_use_dataclasses():
    # The loader registers the module in sys.modules, which dataclasses need; the siblings
    # import as top-level modules, as at the zip's root.
    handler = load_fresh_handler()
    outcome = handler.BatchOutcome(Lines())

    assert dataclasses.is_dataclass(outcome)
    assert handler.BatchOutcome is stock_batch.BatchOutcome


def test_a_failure_is_recorded_and_logged_by_message_and_event_id_never_its_text():
    log = Lines()
    outcome = stock_batch.BatchOutcome(log)

    outcome.fail("msg-1", None, failures.MalformedEventError("delta must be an integer"))
    outcome.fail("msg-2", "evt-2", ProductNotFoundError("no product with sku 'SKU-NOPE'"))
    outcome.fail("msg-3", "evt-3", RuntimeError("password=hunter2"), stack="frames")

    assert list(outcome.failures) == ["msg-1", "msg-2", "msg-3"]
    assert (outcome.rejected, outcome.retryable) == (2, 1)  # the runtime error may pass later
    assert [extra["message_id"] for _, _, extra in log.lines] == ["msg-1", "msg-2", "msg-3"]
    assert log.lines[0][2]["error"] == "MalformedEventError: delta must be an integer"
    assert log.lines[2][2] == {
        "message_id": "msg-3",
        "event_id": "evt-3",
        "error": "RuntimeError",  # an unexpected error's message may carry values: not logged
        "stack": "frames",
    }
    assert all(level == "WARNING" for level, _, _ in log.lines)


def test_an_unreachable_database_fails_every_record_with_one_error_line():
    log = Lines()
    outcome = stock_batch.BatchOutcome(log)
    records = parsed(("m1", "e1"), ("m2", "e2"), ("m3", "e3"))

    outcome.fail_unreachable(records, TimeoutError("connect timed out"))

    assert outcome.path == "unavailable"
    assert list(outcome.failures) == ["m1", "m2", "m3"]
    assert {type(e) for e in outcome.failures.values()} == {failures.DatabaseUnavailableError}
    assert (outcome.rejected, outcome.retryable) == (0, 3)
    assert log.lines == [
        (
            "ERROR",
            "database unreachable; failing the batch",
            {"records": 3, "error": "TimeoutError"},
        )
    ]


def test_a_malformed_body_fails_its_own_record_and_the_rest_are_parsed():
    good = json.dumps(
        {
            "event_id": "e1",
            "sku": "SKU-RED",
            "delta": 2,
            "reason": "restock",
            "occurred_at": "2024-06-03T08:00:00Z",
        }
    )
    records = [SqsRecord("m1", good), SqsRecord("m2", "{not json"), SqsRecord("m3", good)]
    outcome = stock_batch.BatchOutcome(Lines())

    valid = stock_batch.parse_batch(records, outcome)

    assert [(record.message_id, event.event_id) for record, event in valid] == [
        ("m1", "e1"),
        ("m3", "e1"),
    ]
    assert list(outcome.failures) == ["m2"]
    assert isinstance(outcome.failures["m2"], failures.MalformedEventError)


def test_settle_acknowledges_applied_and_duplicate_records_and_fails_rejected_ones():
    records = parsed(("m1", "e1"), ("m2", "e2"), ("m3", "e3"), ("m4", "e1"))
    refusal = InsufficientStockError("SKU-RED", 9, 1)
    # e1 applied now (m4 carries it again: a duplicate), e2 in the ledger, e3 refused.
    result = IngestResult(
        applied=["e1"], duplicates=["e2", "e1"], rejected=[RejectedEvent("e3", refusal)]
    )
    outcome = stock_batch.BatchOutcome(Lines())

    stock_batch.settle(records, result, outcome)

    assert (outcome.applied, outcome.duplicates) == (1, 2)
    assert outcome.failures == {"m3": refusal}
    assert outcome.response([r for r, _ in records]) == {
        "batchItemFailures": [{"itemIdentifier": "m3"}]
    }


def test_an_event_id_rejected_once_fails_every_record_that_carries_it():
    # Nothing is acknowledged that was not committed: e1 was refused, so both records fail.
    records = parsed(("m1", "e1"), ("m2", "e1"))
    refusal = ProductNotFoundError("SKU-RED")
    result = IngestResult(duplicates=["e1"], rejected=[RejectedEvent("e1", refusal)])
    outcome = stock_batch.BatchOutcome(Lines())

    stock_batch.settle(records, result, outcome)

    assert outcome.failures == {"m1": refusal, "m2": refusal}
    assert outcome.all_failed([r for r, _ in records])


def test_an_event_the_result_does_not_mention_fails_instead_of_being_acknowledged():
    records = parsed(("m1", "e1"), ("m2", "e2"))
    outcome = stock_batch.BatchOutcome(Lines())

    stock_batch.settle(records, IngestResult(applied=["e1"]), outcome)

    assert outcome.applied == 1
    assert list(outcome.failures) == ["m2"]
    assert str(outcome.failures["m2"]) == "no outcome reported for event e2"
    assert outcome.retryable == 1


def test_the_response_lists_failed_records_in_delivery_order():
    records = [SqsRecord(m, "{}") for m in ("m3", "m1", "m2")]
    outcome = stock_batch.BatchOutcome(Lines())
    outcome.fail("m2", None, failures.MalformedEventError("x"))
    outcome.fail("m3", None, failures.MalformedEventError("y"))

    assert outcome.response(records) == {
        "batchItemFailures": [{"itemIdentifier": "m3"}, {"itemIdentifier": "m2"}]
    }
    assert not outcome.all_failed(records)
    assert not outcome.all_failed([])  # an empty batch has nothing that failed

"""The modules beside lambda/handler.py, on their own: no database, no network."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import pytest

from dataaccess.errors import ProductNotFoundError
from dataaccess.reports import LowStockItem, OrderTotals, StatusTotals
from scripts.lambda_loader import function_module, load_fresh_handler

stock_batch = function_module("stock_batch")
stock_messages = function_module("stock_messages")
report_io = function_module("report_io")
failures = function_module("failures")


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
    assert outcome.rejected == 2  # malformed and refused; the runtime error may pass later
    assert [extra["message_id"] for _, _, extra in log.lines] == ["msg-1", "msg-2", "msg-3"]
    assert log.lines[0][2]["error"] == "MalformedEventError: delta must be an integer"
    assert log.lines[2][2] == {
        "message_id": "msg-3",
        "event_id": "evt-3",
        "error": "RuntimeError",  # an unexpected error's message may carry values: not logged
        "stack": "frames",
    }
    assert all(level == "WARNING" for level, _, _ in log.lines)


def test_sqs_records_keep_delivery_order_and_read_two_fields():
    event = {
        "Records": [
            {"messageId": "b", "body": "2", "receiptHandle": "x", "attributes": {}},
            {"messageId": "a", "body": "1"},
        ]
    }
    records = stock_messages.sqs_records(event)

    assert records == [stock_messages.SqsRecord("b", "2"), stock_messages.SqsRecord("a", "1")]


def test_a_schedule_event_reports_the_configured_window_before_its_time():
    event = {"detail-type": "Scheduled Event", "time": "2024-06-03T09:00:00Z", "detail": {}}

    request = report_io.report_request(event, {"REPORT_WINDOW_HOURS": "6"})

    assert request == report_io.ReportRequest(
        since=dt.datetime(2024, 6, 3, 3, tzinfo=dt.UTC),
        until=dt.datetime(2024, 6, 3, 9, tzinfo=dt.UTC),
        threshold=10,
        limit=100,
    )


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REPORT_WINDOW_HOURS": "0"}, "REPORT_WINDOW_HOURS"),
        ({"REPORT_LOW_STOCK_THRESHOLD": "-3"}, "REPORT_LOW_STOCK_THRESHOLD"),
    ],
)
def test_a_bad_report_setting_names_its_variable(env, message):
    with pytest.raises(report_io.ReportRequestError, match=message):
        report_io.report_request({}, env)


def test_the_report_result_is_the_documented_json():
    since = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    until = dt.datetime(2024, 6, 2, tzinfo=dt.UTC)
    result = report_io.ReportResult(
        threshold=10,
        totals=OrderTotals(since, until, StatusTotals(2, 3597), StatusTotals(1, 9990)),
        low_stock=[LowStockItem("LOW-1", "low-1", 1)],
    )

    document = result.to_json()

    # docs/lambda.md, "Report": the shape the function has always returned.
    assert document == {
        "window": {"since": "2024-06-01T00:00:00+00:00", "until": "2024-06-02T00:00:00+00:00"},
        "orders": {
            "placed": {"count": 2, "total_cents": 3597},
            "cancelled": {"count": 1, "total_cents": 9990},
        },
        "low_stock": {"threshold": 10, "items": [{"sku": "LOW-1", "name": "low-1", "stock": 1}]},
    }
    assert json.loads(json.dumps(document)) == document  # JSON types only

"""The report function's request validated and its result as JSON (lambda/report_io.py), on
its own: no handler, no Database, no PostgreSQL. The environment is passed in, as
`report_request` allows."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from dataaccess.reports import MAX_LOW_STOCK_LIMIT, LowStockItem, OrderTotals, StatusTotals
from scripts.lambda_loader import function_module

report_io = function_module("report_io")
ReportRequestError = report_io.ReportRequestError
report_request = report_io.report_request

EVENTS = Path(__file__).resolve().parents[1] / "events"
UNTIL = "2024-06-04T00:00:00Z"


def load_event(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


def test_schedule_event_reports_the_window_before_its_time():
    request = report_request(load_event("schedule_report.json"), {})

    assert request.until == dt.datetime(2024, 6, 3, 9, tzinfo=dt.UTC)
    assert request.since == request.until - dt.timedelta(hours=24)
    assert (request.threshold, request.limit) == (10, 100)


def test_a_schedule_event_takes_only_its_time():
    # The event's own fields are EventBridge's, never report parameters.
    event = {**load_event("schedule_report.json"), "hours": 2, "threshold": 3, "limit": 4}

    request = report_request(event, {"REPORT_LOW_STOCK_THRESHOLD": "7"})

    assert request.since == request.until - dt.timedelta(hours=24)
    assert (request.threshold, request.limit) == (7, 100)


def test_direct_invoke_takes_its_window_and_limits():
    request = report_request(load_event("report_direct.json"), {})

    assert request.since == dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    assert request.until == dt.datetime(2024, 6, 4, tzinfo=dt.UTC)
    assert (request.threshold, request.limit) == (5, 50)


def test_direct_invoke_with_hours_ends_at_its_until():
    request = report_request({"until": UNTIL, "hours": 6}, {"REPORT_WINDOW_HOURS": "48"})

    assert request.since == dt.datetime(2024, 6, 3, 18, tzinfo=dt.UTC)


def test_without_until_the_window_ends_now():
    before = dt.datetime.now(dt.UTC)
    request = report_request({"hours": 2}, {})
    after = dt.datetime.now(dt.UTC)

    assert before <= request.until <= after
    assert request.until - request.since == dt.timedelta(hours=2)


@pytest.mark.parametrize("event", [None, [], "report", 7])
def test_a_payload_that_is_not_an_object_gets_the_defaults(event):
    request = report_request(event, {"REPORT_WINDOW_HOURS": "3"})

    assert request.until - request.since == dt.timedelta(hours=3)
    assert (request.threshold, request.limit) == (10, 100)


def test_the_low_stock_limit_is_capped_not_refused():
    request = report_request({"until": UNTIL, "limit": MAX_LOW_STOCK_LIMIT + 1}, {})

    assert request.limit == MAX_LOW_STOCK_LIMIT


def test_the_longest_window_is_accepted():
    hours = report_io.MAX_REPORT_HOURS
    request = report_request({"until": UNTIL, "hours": hours}, {})

    assert request.until - request.since == dt.timedelta(hours=hours)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REPORT_LOW_STOCK_THRESHOLD": "lots"}, "REPORT_LOW_STOCK_THRESHOLD"),
        ({"REPORT_LOW_STOCK_THRESHOLD": "0"}, "REPORT_LOW_STOCK_THRESHOLD"),
        ({"REPORT_WINDOW_HOURS": "1.5"}, "REPORT_WINDOW_HOURS"),
        ({"REPORT_WINDOW_HOURS": "-3"}, "REPORT_WINDOW_HOURS"),
    ],
)
def test_a_bad_report_setting_names_the_variable(env, message):
    with pytest.raises(ReportRequestError, match=message):
        report_request({}, env)


def test_a_blank_setting_is_the_default_and_spaces_around_one_are_ignored():
    request = report_request(
        {"until": UNTIL}, {"REPORT_WINDOW_HOURS": " 6 ", "REPORT_LOW_STOCK_THRESHOLD": "  "}
    )

    assert request.until - request.since == dt.timedelta(hours=6)
    assert request.threshold == 10


def test_the_settings_default_to_the_process_environment(monkeypatch):
    monkeypatch.setenv("REPORT_LOW_STOCK_THRESHOLD", "lots")

    with pytest.raises(ReportRequestError, match="REPORT_LOW_STOCK_THRESHOLD"):
        report_request({})


@pytest.mark.parametrize("name", ["hours", "threshold", "limit"])
@pytest.mark.parametrize("value", [0, -1, True, 1.5, "3", None])
def test_a_count_must_be_a_positive_integer(name, value):
    with pytest.raises(ReportRequestError, match=f"^{name} must be a positive integer"):
        report_request({"until": UNTIL, name: value}, {})


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"until": UNTIL, "hours": report_io.MAX_REPORT_HOURS + 1}, "hours must be at most"),
        ({"since": UNTIL, "until": UNTIL}, "since must be before until"),
        ({"since": "2024-06-05T00:00:00Z", "until": UNTIL}, "since must be before until"),
        ({"until": "2024-06-04T00:00:00"}, "until must carry a timezone"),
        ({"since": "2024-06-01T00:00:00", "until": UNTIL}, "since must carry a timezone"),
        ({"until": "tomorrow"}, "until must be an ISO 8601 timestamp"),
        ({"until": 1717459200}, "until must be an ISO 8601 timestamp"),
        (
            {"since": "2023-06-03T23:00:00Z", "until": UNTIL},
            f"since to until must span at most {report_io.MAX_REPORT_HOURS} hours",
        ),
        ({"detail-type": "Scheduled Event", "source": "aws.events"}, "must carry its time"),
        ({"detail-type": "Scheduled Event", "time": None}, "must carry its time"),
    ],
)
def test_a_bad_window_is_refused_by_name(payload, message):
    with pytest.raises(ReportRequestError, match=message):
        report_request(payload, {})


def test_the_longest_explicit_window_is_accepted():
    until = dt.datetime(2024, 6, 4, tzinfo=dt.UTC)
    since = until - dt.timedelta(hours=report_io.MAX_REPORT_HOURS)

    request = report_request({"since": since.isoformat(), "until": UNTIL}, {})

    assert (request.since, request.until) == (since, until)


def test_a_window_across_offsets_compares_instants():
    # 02:00+02:00 is midnight UTC: an hour before 01:00Z, not after it.
    request = report_request(
        {"since": "2024-06-04T02:00:00+02:00", "until": "2024-06-04T01:00Z"}, {}
    )

    assert request.until - request.since == dt.timedelta(hours=1)


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

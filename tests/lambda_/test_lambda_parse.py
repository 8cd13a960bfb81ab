"""Record bodies and report requests, validated without a database."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from tests.lambda_.helpers import load_event, stock_body

GOOD = json.loads(stock_body("evt-1", "SKU-RED", -2, "adjustment"))


@pytest.fixture
def handler(new_handler):
    """A handler module; nothing here reaches a database."""
    return new_handler()


def test_a_good_body_becomes_a_stock_event(handler):
    event = handler.parse_stock_event(json.dumps(GOOD))

    assert (event.event_id, event.sku, event.delta, event.reason) == (
        "evt-1",
        "SKU-RED",
        -2,
        "adjustment",
    )
    assert event.occurred_at == dt.datetime(2024, 6, 3, 8, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        (json.dumps({**GOOD, "delta": "ten"}), "delta"),
        (json.dumps({**GOOD, "delta": True}), "delta"),
        (json.dumps({**GOOD, "delta": 1.5}), "delta"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "event_id"}), "event_id"),
        (json.dumps({**GOOD, "sku": "   "}), "sku"),
        (json.dumps({**GOOD, "sku": "X" * 65}), "sku"),
        (json.dumps({**GOOD, "reason": None}), "reason"),
        (json.dumps({**GOOD, "occurred_at": "2024-06-03T08:00:00"}), "timezone"),
        (json.dumps({**GOOD, "occurred_at": "last tuesday"}), "occurred_at"),
        (json.dumps({**GOOD, "occurred_at": 1717400000}), "occurred_at"),
    ],
)
def test_a_malformed_body_names_the_field_not_its_value(handler, body, message):
    with pytest.raises(handler.MalformedEventError, match=message) as caught:
        handler.parse_stock_event(body)
    assert "last tuesday" not in str(caught.value)


@pytest.mark.parametrize("body", ["[" * 100_000, '{"delta": ' * 100_000])
def test_json_nested_too_deeply_is_malformed_not_a_crash(handler, body):
    # json.loads gives up on deep nesting with RecursionError, not ValueError: uncaught, it
    # failed the whole batch instead of this one record (found by drill D7).
    with pytest.raises(handler.MalformedEventError, match="not valid JSON"):
        handler.parse_stock_event(body)


def test_the_recorded_batch_has_the_cases_the_handler_must_tell_apart():
    bodies = [r["body"] for r in load_event("sqs_stock_events.json")["Records"]]
    parsed = [json.loads(b) if b.startswith('{"') else None for b in bodies]

    assert parsed[0] == parsed[2]  # a duplicate delivery
    assert parsed[3] is None  # not JSON
    assert parsed[4]["delta"] == "ten"  # a wrong type
    assert parsed[5]["sku"] == "SKU-NOPE"  # an unknown product


def test_schedule_event_reports_the_window_before_its_time(handler, monkeypatch):
    monkeypatch.delenv("REPORT_WINDOW_HOURS", raising=False)
    request = handler.report_request(load_event("schedule_report.json"))

    assert request.until == dt.datetime(2024, 6, 3, 9, tzinfo=dt.UTC)
    assert request.since == request.until - dt.timedelta(hours=24)
    assert (request.threshold, request.limit) == (10, 100)


def test_direct_invoke_takes_its_window_and_limits(handler):
    request = handler.report_request(load_event("report_direct.json"))

    assert request.since == dt.datetime(2024, 6, 1, tzinfo=dt.UTC)
    assert request.until == dt.datetime(2024, 6, 4, tzinfo=dt.UTC)
    assert (request.threshold, request.limit) == (5, 50)


def test_a_bad_report_setting_names_the_variable(handler, monkeypatch):
    monkeypatch.setenv("REPORT_LOW_STOCK_THRESHOLD", "lots")

    with pytest.raises(handler.ReportRequestError, match="REPORT_LOW_STOCK_THRESHOLD"):
        handler.report_request({})

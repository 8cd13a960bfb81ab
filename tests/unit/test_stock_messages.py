"""A stock-events record body validated into a StockEventIn (lambda/stock_messages.py),
on its own: no handler, no Database, no PostgreSQL."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from dataaccess.models import Product, StockEvent
from dataaccess.records import StockEventIn
from scripts.lambda_loader import function_module

stock_messages = function_module("stock_messages")
MalformedEventError = function_module("failures").MalformedEventError
parse = stock_messages.parse_stock_event

EVENTS = Path(__file__).resolve().parents[1] / "events"
GOOD: dict[str, Any] = {
    "event_id": "evt-1",
    "sku": "SKU-RED",
    "delta": -2,
    "reason": "adjustment",
    "occurred_at": "2024-06-03T08:00:00+00:00",
}
FIELDS = list(GOOD)


def body(**changes: Any) -> str:
    """GOOD as a record body, with some fields changed."""
    return json.dumps({**GOOD, **changes})


def without(name: str) -> str:
    return json.dumps({k: v for k, v in GOOD.items() if k != name})


def test_a_good_body_becomes_a_stock_event():
    event = parse(body())

    assert event == StockEventIn(
        event_id="evt-1",
        sku="SKU-RED",
        delta=-2,
        reason="adjustment",
        occurred_at=dt.datetime(2024, 6, 3, 8, tzinfo=dt.UTC),
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ("null", "JSON object"),
        ('"a string"', "JSON object"),
        ("42", "JSON object"),
        (body(delta="ten"), "delta"),
        (body(delta="10"), "delta"),  # a number in a string is still a string
        (body(delta=True), "delta"),  # bool is an int in Python, not in this contract
        (body(delta=False), "delta"),
        (body(delta=1.5), "delta"),
        (body(delta=2.0), "delta"),  # integral, but a JSON float
        (body(delta=None), "delta"),
        (body(delta=[1]), "delta"),
        (body(delta=float("nan")), "delta"),  # json.loads reads NaN as a float
        (without("event_id"), "event_id"),
        (body(event_id=""), "event_id"),
        (body(event_id=17), "event_id"),
        (body(event_id="e" * (stock_messages.MAX_EVENT_ID + 1)), "event_id"),
        (body(sku="   "), "sku"),
        (body(sku="X" * 65), "sku"),
        (body(sku=["SKU-RED"]), "sku"),
        (body(reason=None), "reason"),
        (body(reason="\t\n"), "reason"),
        (body(reason="r" * (stock_messages.MAX_REASON + 1)), "reason"),
        (body(occurred_at="2024-06-03T08:00:00"), "timezone"),
        (body(occurred_at="2024-06-03"), "timezone"),  # a date alone is naive too
        (body(occurred_at="last tuesday"), "occurred_at"),
        (body(occurred_at=""), "occurred_at"),
        (body(occurred_at="2024-06-03T24:00:00Z"), "occurred_at"),
        (body(occurred_at=1717400000), "occurred_at"),  # epoch seconds are not ISO 8601
    ],
)
def test_a_malformed_body_names_the_field_not_its_value(body, message):
    with pytest.raises(MalformedEventError, match=message) as caught:
        parse(body)
    assert "last tuesday" not in str(caught.value)


@pytest.mark.parametrize("name", FIELDS)
def test_each_field_is_required(name):
    with pytest.raises(MalformedEventError, match=name):
        parse(without(name))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("event_id", "SECRET-" + "x" * 200),
        ("sku", "SECRET-" + "x" * 64),
        ("delta", "SECRET"),
        ("reason", "SECRET-" + "x" * 500),
        ("occurred_at", "SECRET"),
        ("occurred_at", "2024-06-03T08:00:00 SECRET"),
    ],
)
def test_the_message_never_carries_the_value(name, value):
    with pytest.raises(MalformedEventError, match=name) as caught:
        parse(body(**{name: value}))
    assert "SECRET" not in str(caught.value)


def test_the_first_bad_field_is_named_delta_first():
    # One message per record: delta is checked before the text fields and the timestamp.
    with pytest.raises(MalformedEventError, match=r"^delta must be an integer$"):
        parse(body(delta="x", sku=None, occurred_at="never"))


@pytest.mark.parametrize("body", ["[" * 100_000, '{"delta": ' * 100_000])
def test_json_nested_too_deeply_is_malformed_not_a_crash(body):
    # json.loads gives up on deep nesting with RecursionError, not ValueError: uncaught, it
    # failed the whole batch instead of this one record (found by drill D7).
    with pytest.raises(MalformedEventError, match="not valid JSON"):
        parse(body)


def test_an_integer_too_long_to_read_is_malformed_not_a_crash():
    # Python refuses int literals over 4300 digits with ValueError, which the parser
    # reports as invalid JSON: the record fails alone.
    digits = "1" + "0" * 5000
    raw = body(delta=0).replace('"delta": 0', f'"delta": {digits}')

    with pytest.raises(MalformedEventError, match="not valid JSON"):
        parse(raw)


@pytest.mark.parametrize(
    ("name", "limit"),
    [
        ("event_id", stock_messages.MAX_EVENT_ID),
        ("sku", stock_messages.MAX_SKU),
        ("reason", stock_messages.MAX_REASON),
    ],
)
def test_text_at_its_length_limit_is_accepted_one_more_is_not(name, limit):
    assert getattr(parse(body(**{name: "a" * limit})), name) == "a" * limit

    with pytest.raises(MalformedEventError, match=f"{name} must be at most {limit} characters"):
        parse(body(**{name: "a" * (limit + 1)}))


def test_the_length_limits_are_the_columns():
    # A longer value would pass here and fail in the database, for the whole batch.
    assert StockEvent.__table__.c.event_id.type.length == stock_messages.MAX_EVENT_ID
    assert Product.__table__.c.sku.type.length == stock_messages.MAX_SKU


def test_text_is_kept_as_sent_not_stripped():
    # Only a blank value is refused; surrounding spaces are part of the sku (an unknown one).
    event = parse(body(event_id=" evt-1 ", sku=" SKU-RED", reason="restock "))

    assert (event.event_id, event.sku, event.reason) == (" evt-1 ", " SKU-RED", "restock ")


@pytest.mark.parametrize("text", ["restock\x00tail", "\ud800"])
def test_text_postgresql_cannot_store_passes_the_parser(text):
    # The parser checks shape, not storability: NUL bytes and lone surrogates are refused
    # later by the driver, and the batch falls back per record
    # (tests/lambda_/test_lambda_batch_paths.py).
    assert parse(body(reason=text)).reason == text


@pytest.mark.parametrize(
    "delta",
    [0, 1, -1, 2**31 - 1, -(2**31 - 1), 2**31, -(2**31), 10**30],
)
def test_any_integer_delta_is_accepted_its_range_is_the_ledgers(delta):
    # No int32 check here: ingest refuses a delta past the INTEGER column with
    # InvalidRequestError (a rejected record, not a retried one).
    assert parse(body(delta=delta)).delta == delta


@pytest.mark.parametrize(
    ("occurred_at", "offset"),
    [
        ("2024-06-03T08:00:00Z", dt.timedelta(0)),
        ("2024-06-03T08:00:00+00:00", dt.timedelta(0)),
        ("2024-06-03T10:00:00+02:00", dt.timedelta(hours=2)),
        ("2024-06-03T03:30:00-04:30", dt.timedelta(hours=-4, minutes=-30)),
        ("2024-06-03 08:00:00.000000+00:00", dt.timedelta(0)),
    ],
)
def test_an_aware_timestamp_keeps_its_instant_and_offset(occurred_at, offset):
    parsed = parse(body(occurred_at=occurred_at)).occurred_at

    assert parsed == dt.datetime(2024, 6, 3, 8, tzinfo=dt.UTC)  # the same instant
    assert parsed.utcoffset() == offset  # not converted to UTC


def test_extra_fields_are_ignored():
    event = parse(body(extra="x", nested={"delta": 99}, event_id="evt-9"))

    assert (event.event_id, event.delta) == ("evt-9", -2)


def test_the_timestamp_helper_raises_the_error_it_is_given():
    class WindowError(ValueError):
        pass

    with pytest.raises(WindowError, match=r"^until must carry a timezone"):
        stock_messages.timestamp("2024-06-03T08:00:00", "until", WindowError)
    with pytest.raises(WindowError, match=r"^until must be an ISO 8601 timestamp"):
        stock_messages.timestamp(None, "until", WindowError)


def test_the_recorded_batch_has_the_cases_the_handler_must_tell_apart():
    bodies = [
        r["body"] for r in json.loads((EVENTS / "sqs_stock_events.json").read_text())["Records"]
    ]
    parsed = [json.loads(b) if b.startswith('{"') else None for b in bodies]

    assert parsed[0] == parsed[2]  # a duplicate delivery
    assert parsed[3] is None  # not JSON
    assert parsed[4]["delta"] == "ten"  # a wrong type
    assert parsed[5]["sku"] == "SKU-NOPE"  # an unknown product

    # And the parser tells them apart: the two malformed ones fail, the rest parse.
    for index in (3, 4):
        with pytest.raises(MalformedEventError):
            parse(bodies[index])
    events = [parse(bodies[i]) for i in (0, 1, 2, 5)]
    assert events[0] == events[2]
    assert events[3].sku == "SKU-NOPE"


def test_sqs_records_keep_delivery_order_and_read_two_fields():
    event = {
        "Records": [
            {"messageId": "b", "body": "2", "receiptHandle": "x", "attributes": {}},
            {"messageId": "a", "body": "1"},
        ]
    }
    records = stock_messages.sqs_records(event)

    assert records == [stock_messages.SqsRecord("b", "2"), stock_messages.SqsRecord("a", "1")]

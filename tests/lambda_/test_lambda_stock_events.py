"""The SQS stock-events handler against the real, migrated PostgreSQL."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from sqlalchemy import func, select

from dataaccess import Database, SettingsError
from dataaccess.models import StockEvent
from scripts.invoke_local import LocalContext
from scripts.localpg import free_port
from tests.lambda_.helpers import (
    count_connect_attempts,
    failed_ids,
    load_event,
    sqs_event,
    stock,
    stock_body,
)

BAD_RECORDS = [  # not JSON, a string delta, an unknown sku
    "0f5c6a2e-0000-4000-8000-000000000004",
    "0f5c6a2e-0000-4000-8000-000000000005",
    "0f5c6a2e-0000-4000-8000-000000000006",
]


def ledger_size(db: Database) -> int:
    with db.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(StockEvent)) or 0


def test_batch_item_failures_list_exactly_the_bad_records(handler, seeded, lambda_context):
    response = handler.stock_events_handler(load_event("sqs_stock_events.json"), lambda_context)

    assert failed_ids(response) == BAD_RECORDS
    # evt-0001 appears twice in the batch: applied once, the repeat acknowledged.
    assert stock(seeded, "SKU-RED") == 15
    assert stock(seeded, "SKU-BLUE") == 2
    assert ledger_size(seeded) == 2


def test_a_batch_delivered_twice_is_applied_once(handler, seeded, lambda_context):
    event = load_event("sqs_stock_events.json")
    first = handler.stock_events_handler(event, lambda_context)
    second = handler.stock_events_handler(event, lambda_context)

    assert failed_ids(first) == failed_ids(second) == BAD_RECORDS
    assert (stock(seeded, "SKU-RED"), stock(seeded, "SKU-BLUE")) == (15, 2)
    assert ledger_size(seeded) == 2


def test_insufficient_stock_fails_only_that_record(handler, seeded, lambda_context):
    event = sqs_event(stock_body("e-1", "SKU-RED", -50), stock_body("e-2", "SKU-RED", -1))

    response = handler.stock_events_handler(event, lambda_context)

    # Not acknowledged, so a later restock lets a redelivery succeed (or it reaches the DLQ).
    assert failed_ids(response) == ["msg-0000"]
    assert stock(seeded, "SKU-RED") == 4
    assert ledger_size(seeded) == 1


def test_two_invocations_racing_on_one_batch_apply_each_event_once(
    handler_env, new_handler, seeded, lambda_context
):
    deltas = [(f"race-{i}", "SKU-RED" if i % 2 else "SKU-BLUE", i % 5 + 1) for i in range(30)]
    event = sqs_event(*(stock_body(*d) for d in deltas))
    environments = [new_handler(), new_handler()]

    with ThreadPoolExecutor(max_workers=2) as pool:
        responses = list(
            pool.map(lambda h: h.stock_events_handler(event, lambda_context), environments)
        )

    assert [r["batchItemFailures"] for r in responses] == [[], []]
    expected = {"SKU-RED": 5, "SKU-BLUE": 5}
    for _, sku, delta in deltas:
        expected[sku] += delta
    assert {sku: stock(seeded, sku) for sku in expected} == expected
    assert ledger_size(seeded) == len(deltas)


def test_database_outage_fails_the_records_instead_of_dropping_them(
    handler_env, new_handler, lambda_context, monkeypatch
):
    handler = new_handler(DB_PORT=str(free_port()), DB_CONNECT_RETRY_BUDGET="0")
    attempts = count_connect_attempts(handler.get_database().writer, monkeypatch)
    event = sqs_event(*(stock_body(f"e-{i}", "SKU-RED", 1) for i in range(4)))

    # Every record failed, so the invocation fails: SQS redelivers the whole batch,
    # Lambda's Errors metric shows the outage and the event source mapping backs off.
    with pytest.raises(BatchProcessingError) as caught:
        handler.stock_events_handler(event, lambda_context)

    errors = [type(info[1]).__name__ for info in caught.value.child_exceptions]
    assert errors == ["DatabaseUnavailableError"] * 4
    assert "Connection refused" in str(caught.value.child_exceptions[0][1])
    # One connect attempt for the whole batch, not one connect timeout per record.
    assert len(attempts) == 1


def test_an_outage_is_waited_out_within_the_invocations_time_then_reported(
    handler_env, new_handler, monkeypatch
):
    handler = new_handler(DB_PORT=str(free_port()))  # the Lambda default budget: 60 s
    attempts = count_connect_attempts(handler.get_database().writer, monkeypatch)
    context = LocalContext(timeout_ms=int((handler.TIME_RESERVE_SECONDS + 1.5) * 1000))

    with pytest.raises(BatchProcessingError):
        handler.stock_events_handler(sqs_event(stock_body("e-1", "SKU-RED", 1)), context)

    # Retried with backoff for the ~1.5 s the invocation could spare, then reported
    # with the reserve still left for the answer.
    assert len(attempts) >= 3
    assert context.get_remaining_time_in_millis() > 1000


def test_an_outage_with_a_malformed_record_still_fails_the_invocation(
    handler_env, new_handler, lambda_context
):
    handler = new_handler(DB_PORT=str(free_port()), DB_CONNECT_RETRY_BUDGET="0")
    event = sqs_event("{not json", stock_body("e-1", "SKU-RED", 1))

    with pytest.raises(BatchProcessingError) as caught:
        handler.stock_events_handler(event, lambda_context)

    errors = [type(info[1]).__name__ for info in caught.value.child_exceptions]
    assert errors == ["MalformedEventError", "DatabaseUnavailableError"]


def test_a_batch_after_an_outage_tries_the_database_again(
    handler_env, new_handler, app_settings, seeded, lambda_context
):
    handler = new_handler(DB_PORT=str(free_port()), DB_CONNECT_RETRY_BUDGET="0")
    event = sqs_event(stock_body("e-1", "SKU-RED", 1))
    with pytest.raises(BatchProcessingError):
        handler.stock_events_handler(event, lambda_context)
    # The database is back (here: the same environment, a reachable Database).
    handler.set_database(Database.from_settings(app_settings)).dispose()

    response = handler.stock_events_handler(event, lambda_context)

    assert response["batchItemFailures"] == []
    assert stock(seeded, "SKU-RED") == 6


def test_a_batch_whose_every_record_is_malformed_fails_the_invocation(handler, lambda_context):
    with pytest.raises(BatchProcessingError) as caught:
        handler.stock_events_handler(sqs_event("{not json", "[]"), lambda_context)

    errors = [type(info[1]).__name__ for info in caught.value.child_exceptions]
    assert errors == ["MalformedEventError"] * 2


def test_import_does_not_connect_and_bad_settings_fail_at_first_use(
    new_handler, monkeypatch, lambda_context
):
    monkeypatch.delenv("DB_HOST", raising=False)
    handler = new_handler(AWS_LAMBDA_FUNCTION_NAME="stock-events-test")

    assert handler._database is None
    with pytest.raises(SettingsError, match="DB_HOST"):
        handler.stock_events_handler(sqs_event(stock_body("e", "SKU-RED", 1)), lambda_context)

"""The set-based batch path, its per-record fallback, and event ids repeated within a batch."""

from __future__ import annotations

import json

import sqlalchemy as sa
from sqlalchemy import func, select

from dataaccess import Database
from dataaccess.models import StockEvent
from dataaccess.services import MAX_INT32
from tests.lambda_.helpers import failed_ids, sqs_event, stock, stock_body

# A body marker that must never reach a log line.
SECRET = "body-marker-7f3a"


def ledger(db: Database) -> set[str]:
    with db.unit_of_work() as uow:
        return set(uow.session.scalars(select(StockEvent.event_id)))


def ledger_size(db: Database) -> int:
    with db.unit_of_work() as uow:
        return uow.session.scalar(select(func.count()).select_from(StockEvent)) or 0


def count_commits(engine: sa.Engine) -> list[int]:
    commits: list[int] = []
    sa.event.listen(engine, "commit", lambda *_: commits.append(1))
    return commits


def log_lines(captured: str) -> list[dict]:
    """The JSON log lines on stdout, without the invocation's metrics (an EMF document)."""
    lines = [json.loads(line) for line in captured.splitlines() if line.startswith("{")]
    return [line for line in lines if "_aws" not in line]


def test_a_batch_is_applied_in_one_transaction_with_one_summary_line(
    handler_env, new_handler, seeded, lambda_context, capsys
):
    handler = new_handler()  # in the test: its logger writes to this phase's stdout
    commits = count_commits(handler.get_database().writer)
    event = sqs_event(*(stock_body(f"one-{i}", "SKU-RED", 1) for i in range(10)))

    response = handler.stock_events_handler(event, lambda_context)

    assert response == {"batchItemFailures": []}
    assert len(commits) == 1
    assert stock(seeded, "SKU-RED") == 15
    lines = log_lines(capsys.readouterr().out)
    summaries = [line for line in lines if line["message"] == "stock events batch"]
    assert len(summaries) == 1
    assert {k: summaries[0][k] for k in ("records", "path", "applied", "duplicates", "failed")} == {
        "records": 10,
        "path": "batch",
        "applied": 10,
        "duplicates": 0,
        "failed": 0,
    }
    assert [line["message"] for line in lines if line["level"] == "INFO"] == [
        "database configured",
        "stock events batch",
    ]


def test_duplicate_event_ids_within_a_batch_apply_once(
    handler_env, new_handler, seeded, lambda_context, capsys
):
    handler = new_handler()
    event = sqs_event(
        stock_body("dup-a", "SKU-RED", 1),
        stock_body("dup-a", "SKU-RED", 1),  # a redelivery inside the batch
        stock_body("dup-b", "SKU-BLUE", 2),
        stock_body("dup-a", "SKU-RED", 7),  # same id, other payload: the first one wins
    )

    response = handler.stock_events_handler(event, lambda_context)

    assert response["batchItemFailures"] == []
    assert (stock(seeded, "SKU-RED"), stock(seeded, "SKU-BLUE")) == (6, 7)
    assert ledger(seeded) == {"dup-a", "dup-b"}
    summary = next(
        line
        for line in log_lines(capsys.readouterr().out)
        if line["message"] == "stock events batch"
    )
    assert (summary["applied"], summary["duplicates"]) == (2, 2)


def test_every_record_of_a_rejected_event_id_fails(handler, seeded, lambda_context):
    event = sqs_event(
        stock_body("ok", "SKU-RED", 1),
        stock_body("nope", "SKU-NOPE", 1),
        stock_body("nope", "SKU-NOPE", 1),  # the ingest calls this a duplicate of a rejection
    )

    response = handler.stock_events_handler(event, lambda_context)

    # Acknowledging the repeat would delete a message whose event never took effect.
    assert failed_ids(response) == ["msg-0001", "msg-0002"]
    assert ledger(seeded) == {"ok"}


def test_a_record_is_not_acknowledged_when_its_event_id_was_also_rejected(
    handler, seeded, lambda_context
):
    event = sqs_event(
        stock_body("mixed", "SKU-RED", MAX_INT32 + 1),  # out of range: rejected
        stock_body("mixed", "SKU-RED", 2),  # applied
        stock_body("other", "SKU-BLUE", 1),
    )

    first = handler.stock_events_handler(event, lambda_context)
    again = handler.stock_events_handler(
        sqs_event(stock_body("mixed", "SKU-RED", 2)), lambda_context
    )

    # Conservative: both records of "mixed" are redelivered; the applied one is then
    # acknowledged as a duplicate, and its effect happened once.
    assert failed_ids(first) == ["msg-0000", "msg-0001"]
    assert again["batchItemFailures"] == []
    assert (stock(seeded, "SKU-RED"), stock(seeded, "SKU-BLUE")) == (7, 6)


def test_a_poison_record_falls_back_to_one_unit_of_work_per_record(
    handler_env, new_handler, seeded, lambda_context, capsys
):
    handler = new_handler()
    # A NUL byte passes the validator (a non-empty string) but no PostgreSQL text can
    # hold it: the driver refuses the whole set-based statement.
    poison = stock_body("poison", "SKU-RED", 1, reason=f"restock\x00{SECRET}")
    event = sqs_event(
        stock_body("good-1", "SKU-RED", 1), poison, stock_body("good-2", "SKU-BLUE", 2)
    )

    response = handler.stock_events_handler(event, lambda_context)

    assert failed_ids(response) == ["msg-0001"]
    assert (stock(seeded, "SKU-RED"), stock(seeded, "SKU-BLUE")) == (6, 7)
    assert ledger(seeded) == {"good-1", "good-2"}
    out = capsys.readouterr().out
    assert SECRET not in out
    summary = next(line for line in log_lines(out) if line["message"] == "stock events batch")
    assert (summary["path"], summary["applied"], summary["failed"]) == ("per-record", 2, 1)

    # Redelivered: the good ones are duplicates now, the poison fails again.
    again = handler.stock_events_handler(event, lambda_context)
    assert failed_ids(again) == ["msg-0001"]
    assert (stock(seeded, "SKU-RED"), stock(seeded, "SKU-BLUE")) == (6, 7)


def test_stock_past_the_column_range_is_rejected_in_the_batch_and_logs_no_parameters(
    handler_env, new_handler, seeded, lambda_context, capsys
):
    handler = new_handler()
    # Each delta fits an integer, their sum does not: the batch path replays the
    # events on the locked stock, applies the first and rejects only the second.
    big = 2_000_000_000
    event = sqs_event(
        stock_body("big-1", "SKU-RED", big, reason=SECRET),
        stock_body("big-2", "SKU-RED", big, reason=SECRET),
        stock_body("small", "SKU-BLUE", 1, reason=SECRET),
    )

    response = handler.stock_events_handler(event, lambda_context)

    assert failed_ids(response) == ["msg-0001"]
    assert (stock(seeded, "SKU-RED"), stock(seeded, "SKU-BLUE")) == (5 + big, 6)
    assert ledger_size(seeded) == 2
    out = capsys.readouterr().out
    assert SECRET not in out
    assert "[parameters" not in out
    summary = next(line for line in log_lines(out) if line["message"] == "stock events batch")
    assert summary["path"] == "batch"
    failure = next(line for line in log_lines(out) if line["message"] == "stock event failed")
    assert failure["message_id"] == "msg-0001"
    assert failure["error"].startswith("InvalidRequestError: event big-2 would take the stock")


def test_an_event_id_python_cannot_encode_is_reported_and_logged(
    handler_env, new_handler, seeded, lambda_context, capsys
):
    handler = new_handler()
    # A lone surrogate, escaped in the JSON: it parses, but neither UTF-8 nor the database takes it.
    event = sqs_event(
        '{"event_id": "\\ud800", "sku": "SKU-RED", "delta": 1, "reason": "x", '
        '"occurred_at": "2024-06-03T08:00:00+00:00"}',
        stock_body("fine-1", "SKU-RED", 1),
    )

    response = handler.stock_events_handler(event, lambda_context)

    assert response == {"batchItemFailures": [{"itemIdentifier": "msg-0000"}]}
    assert stock(seeded, "SKU-RED") == 6
    failed = [
        line
        for line in log_lines(capsys.readouterr().out)
        if line["message"] == "stock event failed"
    ]
    assert [line["event_id"] for line in failed] == ["\ud800"]

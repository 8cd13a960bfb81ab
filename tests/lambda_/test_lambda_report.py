"""The report handler: what it reads matches what the services wrote, via the read-only path."""

from __future__ import annotations

import datetime as dt
import json
import os

import pytest
import sqlalchemy as sa

from dataaccess import Database, services
from dataaccess.services import LineRequest
from scripts.lambda_loader import function_module
from tests.lambda_.helpers import load_event


@pytest.fixture
def shop(db: Database) -> dict[str, int]:
    """Three products and three orders (one cancelled), written through the services."""
    with db.unit_of_work() as uow:
        customer = services.create_customer(uow, email="ada@example.com", name="Ada").id
    for sku, price, stock in [("LOW-1", 250, 3), ("LOW-2", 100, 9), ("PLENTY", 999, 500)]:
        with db.unit_of_work() as uow:
            services.create_product(uow, sku=sku, name=sku.lower(), price_cents=price, stock=stock)
    orders = []
    for lines in ([("LOW-1", 2)], [("PLENTY", 3), ("LOW-2", 1)], [("PLENTY", 10)]):
        with db.unit_of_work() as uow:
            placed = services.place_order(
                uow, customer_id=customer, lines=[LineRequest(s, q) for s, q in lines]
            )
            orders.append(placed.order.id)
    with db.unit_of_work() as uow:
        services.cancel_order(uow, orders[2])
    return {"placed_cents": 2 * 250 + 3 * 999 + 100, "cancelled_cents": 10 * 999}


def now_window() -> dict[str, str]:
    now = dt.datetime.now(dt.UTC)
    return {
        "since": (now - dt.timedelta(minutes=5)).isoformat(),
        "until": (now + dt.timedelta(minutes=5)).isoformat(),
    }


def test_report_matches_what_the_services_wrote(handler, shop, lambda_context):
    report = handler.report_handler({**now_window(), "threshold": 10}, lambda_context)

    assert report["orders"] == {
        "placed": {"count": 2, "total_cents": shop["placed_cents"]},
        "cancelled": {"count": 1, "total_cents": shop["cancelled_cents"]},
    }
    # LOW-1: 3 - 2 = 1 left; LOW-2: 9 - 1 = 8; the cancelled order returned PLENTY's stock.
    assert report["low_stock"] == {
        "threshold": 10,
        "items": [
            {"sku": "LOW-1", "name": "low-1", "stock": 1},
            {"sku": "LOW-2", "name": "low-2", "stock": 8},
        ],
    }


def test_scheduled_report_covers_the_hours_before_the_schedule_time(
    handler, shop, lambda_context, monkeypatch
):
    monkeypatch.setenv("REPORT_WINDOW_HOURS", "2")
    schedule = load_event("schedule_report.json")
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    schedule["time"] = later.strftime("%Y-%m-%dT%H:%M:%SZ")

    report = handler.report_handler(schedule, lambda_context)

    assert report["orders"]["placed"]["count"] == 2
    since = dt.datetime.fromisoformat(report["window"]["since"])
    until = dt.datetime.fromisoformat(report["window"]["until"])
    assert until - since == dt.timedelta(hours=2)


def test_the_recorded_schedule_window_has_no_orders(handler, shop, lambda_context):
    report = handler.report_handler(load_event("schedule_report.json"), lambda_context)

    assert report["window"] == {
        "since": "2024-06-02T09:00:00+00:00",
        "until": "2024-06-03T09:00:00+00:00",
    }
    assert report["orders"]["placed"] == {"count": 0, "total_cents": 0}


def test_report_reads_through_the_reader_in_a_read_only_transaction(
    handler_env, new_handler, shop, lambda_context
):
    # The same server under another name stands in for the Aurora reader endpoint.
    handler = new_handler(DB_READER_HOST="localhost")
    database = handler.get_database()
    assert database.reader is not None
    seen: list[tuple[str, str]] = []

    def record(role: str) -> object:
        def before_cursor_execute(conn, cursor, statement, *_):
            if statement.lstrip().upper().startswith("SELECT"):
                read_only = conn.exec_driver_sql("SHOW transaction_read_only").scalar()
                seen.append((role, read_only))

        return before_cursor_execute

    sa.event.listen(database.writer, "before_cursor_execute", record("writer"))
    sa.event.listen(database.reader, "before_cursor_execute", record("reader"))

    handler.report_handler(now_window(), lambda_context)

    assert seen
    assert set(seen) == {("reader", "on")}


def test_an_invalid_direct_invoke_fails_naming_the_parameter_before_any_connect(
    new_handler, lambda_context
):
    # tests/unit/test_report_io.py has every rule; this is the handler letting it through.
    handler = new_handler()  # no DB_* set: reaching the database would fail differently

    with pytest.raises(function_module("report_io").ReportRequestError, match="threshold"):
        handler.report_handler({"threshold": 0}, lambda_context)
    assert handler.set_database(None) is None  # no Database was built


def test_a_doctor_invoke_returns_the_doctors_report_and_no_secret(handler, lambda_context):
    # `aws lambda invoke --payload '{"doctor": true}'` on the report function.
    report = handler.report_handler({"doctor": True}, lambda_context)
    steps = {step["step"]: step["status"] for step in report["steps"]}
    assert report["ok"] is True, report
    assert report["exit_code"] == 0
    assert steps["login"] == "pass"
    assert steps["privileges"] == "pass"
    assert os.environ["DB_PASSWORD"] not in json.dumps(report)


def test_a_doctor_invoke_names_the_broken_link(new_handler, handler_env, lambda_context):
    handler = new_handler(DB_PASSWORD="not-the-password")
    report = handler.report_handler({"doctor": True}, lambda_context)
    assert report["ok"] is False
    assert report["failed_step"] == "login"
    assert "not-the-password" not in json.dumps(report)

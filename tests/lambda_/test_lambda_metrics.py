"""The handlers' metrics: one embedded metric format document on stdout per invocation,
with the batch's outcome or the report's duration and the connection figures."""

from __future__ import annotations

import datetime as dt
import json
import secrets
from typing import Any

import boto3
import pytest
import time_machine
from aws_lambda_powertools.utilities.batch.exceptions import BatchProcessingError
from moto import mock_aws
from psycopg import sql

from dataaccess import SettingsError
from scripts.localpg import free_port
from tests.emf import emf_documents, metrics_of
from tests.lambda_.helpers import lambda_env, sqs_event, stock_body

REGION = "eu-west-1"
FROZEN = dt.datetime(2026, 1, 5, 9, 0, 0, tzinfo=dt.UTC)
BATCH_METRICS = {"EventsApplied", "EventsDuplicate", "EventsRejected", "EventsFailed"}


def one_document(out: str) -> dict[str, Any]:
    """The invocation's one EMF document (checked against the specification)."""
    (document,) = emf_documents(out)
    return document


def values(document: dict[str, Any]) -> dict[str, list[float]]:
    return {name: vals for name, (_, vals) in metrics_of(document).items()}


def test_one_invocation_publishes_its_outcome_and_first_connection(
    handler_env, new_handler, seeded, lambda_context, capsys, monkeypatch
):
    monkeypatch.delenv("POWERTOOLS_METRICS_NAMESPACE", raising=False)
    handler = new_handler()
    capsys.readouterr()
    event = sqs_event(
        stock_body("m-1", "SKU-RED", 2),
        stock_body("m-1", "SKU-RED", 2),  # the same event id again: a duplicate
        "{not json",  # malformed: rejected
    )

    response = handler.stock_events_handler(event, lambda_context)

    assert len(response["batchItemFailures"]) == 1
    document = one_document(capsys.readouterr().out)
    (directive,) = document["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "dataaccess"
    assert directive["Dimensions"] == [["service"]]
    assert document["service"] == handler.logger.service
    assert {m["Name"]: m["Unit"] for m in directive["Metrics"]} == {
        "EventsApplied": "Count",
        "EventsDuplicate": "Count",
        "EventsRejected": "Count",
        "EventsFailed": "Count",
        "BatchDuration": "Milliseconds",
        "DbConnectTime": "Milliseconds",
        "DbConnectRetries": "Count",
    }
    figures = values(document)
    assert figures["EventsApplied"] == [1.0]
    assert figures["EventsDuplicate"] == [1.0]
    assert figures["EventsRejected"] == [1.0]
    assert figures["EventsFailed"] == [0.0]
    # The first invocation opened the environment's connection, at the first attempt.
    (connect_ms,) = figures["DbConnectTime"]
    assert connect_ms > 0
    assert figures["DbConnectRetries"] == [0.0]
    (batch_ms,) = figures["BatchDuration"]
    assert batch_ms > connect_ms  # the connect happened inside the batch

    # Warm: the pooled connection is reused, so no connection figures at all.
    warm_event = sqs_event(stock_body("m-2", "SKU-RED", 1), stock_body("m-3", "SKU-NOPE", 1))
    handler.stock_events_handler(warm_event, lambda_context)
    warm = values(one_document(capsys.readouterr().out))
    assert set(warm) == BATCH_METRICS | {"BatchDuration"}
    assert warm["EventsApplied"] == [1.0]
    assert warm["EventsRejected"] == [1.0]  # an unknown sku: refused by a domain rule

    handler.report_handler({}, lambda_context)
    report = one_document(capsys.readouterr().out)
    assert metrics_of(report) == {"ReportDuration": ("Milliseconds", report["ReportDuration"])}
    assert report["service"] == handler.logger.service


def test_an_outage_publishes_failed_records_and_the_connect_that_gave_up(
    handler_env, new_handler, lambda_context, capsys
):
    handler = new_handler(
        DB_PORT=str(free_port()),
        DB_CONNECT_RETRY_BUDGET="0",
        POWERTOOLS_METRICS_NAMESPACE="inventory/test",
    )
    capsys.readouterr()
    event = sqs_event("{not json", stock_body("o-1", "SKU-RED", 1), stock_body("o-2", "SKU-RED", 1))

    with pytest.raises(BatchProcessingError):
        handler.stock_events_handler(event, lambda_context)

    document = one_document(capsys.readouterr().out)
    assert document["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "inventory/test"
    figures = values(document)
    assert figures["EventsApplied"] == figures["EventsDuplicate"] == [0.0]
    assert figures["EventsRejected"] == [1.0]  # malformed: redelivery cannot help
    assert figures["EventsFailed"] == [2.0]  # the database: redelivery may
    assert figures["DbConnectFailures"] == [1.0]
    assert figures["DbConnectRetries"] == [0.0]  # a budget of 0: one attempt
    assert "DbConnectTime" not in figures  # no connection was opened


def test_a_configuration_error_still_publishes_a_valid_document(
    new_handler, lambda_context, capsys, monkeypatch
):
    monkeypatch.delenv("DB_HOST", raising=False)
    handler = new_handler()
    capsys.readouterr()

    with pytest.raises(SettingsError, match="DB_HOST"):
        handler.stock_events_handler(sqs_event(stock_body("c-1", "SKU-RED", 1)), lambda_context)

    assert set(values(one_document(capsys.readouterr().out))) == {"BatchDuration"}


def test_iam_auth_publishes_the_token_minted_by_the_first_invocation_only(
    app_settings, postgresql, new_handler, seeded, lambda_context, monkeypatch, capsys
):
    role = f"lambda_iam_{secrets.token_hex(4)}"
    with postgresql.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        cursor.execute(sql.SQL("GRANT app_iam TO {}").format(sql.Identifier(role)))
    postgresql.commit()
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("DB_PASSWORD", raising=False)
    env = {**lambda_env(app_settings), "DB_AUTH": "iam", "DB_USER": role, "DB_REGION": REGION}
    del env["DB_PASSWORD"]

    with mock_aws(), time_machine.travel(FROZEN, tick=False):
        # A presigned URL: the same token the handler will mint, under a frozen clock.
        token = boto3.client("rds", region_name=REGION).generate_db_auth_token(
            DBHostname=app_settings.host, Port=app_settings.port, DBUsername=role, Region=REGION
        )
        with postgresql.cursor() as cursor:
            cursor.execute(
                sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(token)
                )
            )
        postgresql.commit()
        handler = new_handler(**env)
        capsys.readouterr()

        documents = []
        for i in range(3):
            response = handler.stock_events_handler(
                sqs_event(stock_body(f"iam-m-{i}", "SKU-BLUE", 1)), lambda_context
            )
            assert response["batchItemFailures"] == []
            documents.append(values(one_document(capsys.readouterr().out)))

    cold, *warm = documents
    assert cold["DbTokensMinted"] == [1.0]
    assert cold["DbConnectRetries"] == [0.0]
    assert cold["EventsApplied"] == [1.0]
    for document in warm:
        assert set(document) == BATCH_METRICS | {"BatchDuration"}
        assert document["EventsApplied"] == [1.0]
    assert handler.writer_credentials().minted == 1
    # The document is about the token, never of it.
    assert token.split("X-Amz-Signature=")[1] not in json.dumps(documents)

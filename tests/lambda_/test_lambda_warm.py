"""Warm invocations: one physical connection, reused; one IAM token, reused."""

from __future__ import annotations

import datetime as dt
import secrets

import boto3
import sqlalchemy as sa
import time_machine
from moto import mock_aws
from psycopg import sql

from tests.lambda_.helpers import lambda_env, sqs_event, stock, stock_body

REGION = "eu-west-1"
FROZEN = dt.datetime(2026, 1, 5, 9, 0, 0, tzinfo=dt.UTC)


def count_connects(engine: sa.Engine) -> list[int]:
    """A list that grows by one for each new physical connection the engine opens."""
    opened: list[int] = []
    sa.event.listen(engine, "connect", lambda *_: opened.append(1))
    return opened


def backends(postgresql, application_name: str) -> list[int]:
    with postgresql.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name]
        )
        return [row[0] for row in cursor.fetchall()]


def test_warm_invocations_share_one_physical_connection(
    handler, handler_env, seeded, postgresql, lambda_context
):
    opened = count_connects(handler.get_database().writer)

    for i in range(5):
        response = handler.stock_events_handler(
            sqs_event(stock_body(f"warm-{i}", "SKU-RED", 1)), lambda_context
        )
        assert response["batchItemFailures"] == []
        handler.report_handler({}, lambda_context)

    assert len(opened) == 1
    assert len(backends(postgresql, handler_env["DB_APPLICATION_NAME"])) == 1
    assert stock(seeded, "SKU-RED") == 10


def test_a_connection_dropped_while_frozen_is_replaced_on_the_next_invocation(
    handler, handler_env, seeded, postgresql, lambda_context
):
    opened = count_connects(handler.get_database().writer)
    handler.stock_events_handler(sqs_event(stock_body("e-1", "SKU-RED", 1)), lambda_context)
    with postgresql.cursor() as cursor:
        # What an Aurora failover or an idle timeout does to a frozen environment's connection.
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            [handler_env["DB_APPLICATION_NAME"]],
        )

    response = handler.stock_events_handler(
        sqs_event(stock_body("e-2", "SKU-RED", 1)), lambda_context
    )

    # Not a failed record: the pre-ping notices (a connection idle for a while), or, for
    # one used moments ago and not pinged, the batch is retried once on a fresh connection.
    assert response["batchItemFailures"] == []
    assert len(opened) == 2
    assert stock(seeded, "SKU-RED") == 7


def test_iam_auth_mints_one_token_across_warm_invocations(
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
        # The token is a presigned URL: deterministic under a frozen clock and fixed keys.
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

        for i in range(20):
            response = handler.stock_events_handler(
                sqs_event(stock_body(f"iam-{i}", "SKU-BLUE", 1)), lambda_context
            )
            assert response["batchItemFailures"] == []
        handler.report_handler({}, lambda_context)

        assert handler.writer_credentials().minted == 1
    assert stock(seeded, "SKU-BLUE") == 25
    captured = capsys.readouterr()
    assert token not in captured.out + captured.err
    assert token.split("X-Amz-Signature=")[1] not in captured.out + captured.err

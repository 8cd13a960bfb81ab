"""SnapStart: nothing an initialised environment took survives into the copies restored
from its snapshot: no pooled connection, no cached token or secret, no shared random state.

The runtime calls `before_snapshot` and `after_restore` (lambda/handler.py registers them
with snapshot_restore_py); here a test calls them around real invocations, and a change of
AWS keys or password between the two stands in for the restore into another environment.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import secrets
import time

import boto3
import pytest
import time_machine
from moto import mock_aws
from psycopg import sql

from dataaccess.resilience import backoff_delays
from scripts.localiam import OTHER_AWS_CREDENTIALS, IamKey
from tests.emf import emf_documents, metrics_of
from tests.lambda_.helpers import lambda_env, sqs_event, stock, stock_body

REGION = "eu-west-1"
FROZEN = dt.datetime(2026, 1, 5, 9, 0, 0, tzinfo=dt.UTC)


def backends(postgresql, application_name: str) -> list[int]:
    """The server processes of the connections this handler's engines hold open."""
    with postgresql.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [application_name]
        )
        pids = [row[0] for row in cursor.fetchall()]
    postgresql.commit()  # the statistics are a snapshot per transaction: the next read is new
    return pids


def no_backends_left(postgresql, application_name: str) -> bool:
    """True once the server has no connection of this handler (a closed connection's backend
    exits moments after the client hangs up); False if one is still there after 5 s."""
    deadline = time.monotonic() + 5
    while backends(postgresql, application_name):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def login_role(postgresql, password: str) -> str:
    """A new login role with the application's grants and this password."""
    role = f"lambda_snap_{secrets.token_hex(4)}"
    with postgresql.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
        cursor.execute(sql.SQL("GRANT app_iam TO {}").format(sql.Identifier(role)))
    postgresql.commit()
    set_password(postgresql, role, password)
    return role


def set_password(postgresql, role: str, password: str) -> None:
    with postgresql.cursor() as cursor:
        cursor.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(sql.Identifier(role), sql.Literal(password))
        )
    postgresql.commit()


def use_key(monkeypatch, key: IamKey) -> None:
    """The process's AWS credentials are `key`'s, and nothing else."""
    for name in OTHER_AWS_CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    for name, value in key.env().items():
        monkeypatch.setenv(name, value)


def token(app_settings, role: str) -> str:
    """The token botocore signs now, with the process's AWS credentials (a new session: the
    default one would keep the first credentials it read)."""
    client = boto3.session.Session().client("rds", region_name=REGION)
    return client.generate_db_auth_token(
        DBHostname=app_settings.host, Port=app_settings.port, DBUsername=role, Region=REGION
    )


def figures(out: str) -> dict[str, list[float]]:
    (document,) = emf_documents(out)
    return {name: values for name, (_, values) in metrics_of(document).items()}


def test_a_restored_environment_logs_in_afresh_with_its_own_credentials(
    app_settings, postgresql, new_handler, seeded, lambda_context, monkeypatch, capsys
):
    snapshot_key, restored_key = IamKey.generate(), IamKey.generate()
    use_key(monkeypatch, snapshot_key)
    monkeypatch.delenv("DB_PASSWORD", raising=False)
    env = {**lambda_env(app_settings), "DB_AUTH": "iam", "DB_REGION": REGION}
    del env["DB_PASSWORD"]
    application = env["DB_APPLICATION_NAME"]

    # A frozen clock makes a token deterministic, so it can be the role's password.
    with time_machine.travel(FROZEN, tick=False):
        role = login_role(postgresql, "unset")
        set_password(postgresql, role, token(app_settings, role))
        handler = new_handler(**{**env, "DB_USER": role})
        first = handler.stock_events_handler(
            sqs_event(stock_body("snap-1", "SKU-RED", 1)), lambda_context
        )
        assert first["batchItemFailures"] == []
        (initialised,) = backends(postgresql, application)

        handler.before_snapshot()
        assert no_backends_left(postgresql, application), "the snapshot holds no connection"

        # Restored in another environment: Lambda's credentials there are other keys, and
        # only a token signed with them logs in (the snapshot's cached token is refused).
        use_key(monkeypatch, restored_key)
        set_password(postgresql, role, token(app_settings, role))
        handler.after_restore()
        capsys.readouterr()
        restored = handler.stock_events_handler(
            sqs_event(stock_body("snap-2", "SKU-RED", 1)), lambda_context
        )

    assert restored["batchItemFailures"] == []
    (backend,) = backends(postgresql, application)
    assert backend != initialised  # a new physical connection
    assert handler.writer_credentials().minted == 2  # a new token, for the new keys
    published = figures(capsys.readouterr().out)
    assert published["DbTokensMinted"] == [1.0]
    assert published["DbConnectRetries"] == [0.0]  # its first login was accepted
    assert len(published["DbConnectTime"]) == 1
    assert stock(seeded, "SKU-RED") == 7


def test_a_restored_environment_reads_its_secret_again_for_writer_and_reader(
    app_settings, postgresql, new_handler, seeded, lambda_context, monkeypatch, capsys
):
    monkeypatch.delenv("DB_PASSWORD", raising=False)
    env = {
        **lambda_env(app_settings),
        "DB_AUTH": "secret",
        "DB_SECRET_ID": "db/lambda",
        # The same server under another name: a reader engine, with its own credentials.
        "DB_READER_HOST": "localhost" if app_settings.host == "127.0.0.1" else "127.0.0.1",
        "AWS_REGION": REGION,
    }
    del env["DB_PASSWORD"]
    application = env["DB_APPLICATION_NAME"]
    before, after = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    role = login_role(postgresql, before)

    def invoke(event_id: str) -> list[dict[str, list[float]]]:
        """A batch (the writer) and a report (the reader); each one's published figures."""
        capsys.readouterr()
        response = handler.stock_events_handler(
            sqs_event(stock_body(event_id, "SKU-BLUE", 1)), lambda_context
        )
        assert response["batchItemFailures"] == []
        batch = figures(capsys.readouterr().out)
        handler.report_handler({}, lambda_context)
        return [batch, figures(capsys.readouterr().out)]

    with mock_aws():
        manager = boto3.client("secretsmanager", region_name=REGION)
        manager.create_secret(
            Name="db/lambda", SecretString=json.dumps({"username": role, "password": before})
        )
        handler = new_handler(**env)
        invoke("sec-1")
        initialised = set(backends(postgresql, application))
        assert len(initialised) == 2  # the writer's connection and the reader's

        handler.before_snapshot()
        assert no_backends_left(postgresql, application)
        # The password rotated while the snapshot waited: every cached secret is stale.
        set_password(postgresql, role, after)
        manager.put_secret_value(
            SecretId="db/lambda", SecretString=json.dumps({"username": role, "password": after})
        )
        handler.after_restore()
        restored = invoke("sec-2")

        assert handler.writer_credentials().fetches == 2
    assert not set(backends(postgresql, application)) & initialised  # new connections
    for published in restored:  # each engine read the secret afresh and logged in at once
        assert published["DbSecretReads"] == [1.0]
        assert published["DbConnectRetries"] == [0.0]  # no refused login with a stale secret
    assert stock(seeded, "SKU-BLUE") == 7


def test_restored_environments_do_not_share_the_snapshots_random_state(new_handler):
    handler = new_handler()  # no database yet: the hooks have nothing else to do
    random.seed(20260105)
    snapshot = random.getstate()
    try:
        jitters = []
        for _ in range(2):  # two environments restored from one snapshot
            random.setstate(snapshot)
            handler.after_restore()
            delays = backoff_delays()
            jitters.append([next(delays) for _ in range(4)])
    finally:
        random.seed()
    assert jitters[0] != jitters[1], "restored copies would retry their connects in lockstep"


def test_the_hooks_are_registered_with_the_runtimes_library(new_handler):
    snapshot_restore_py = pytest.importorskip("snapshot_restore_py")
    handler = new_handler()
    before = snapshot_restore_py.get_before_snapshot()
    after = snapshot_restore_py.get_after_restore()
    try:
        assert (handler.before_snapshot, (), {}) in before
        assert (handler.after_restore, (), {}) in after
    finally:
        before.remove((handler.before_snapshot, (), {}))
        after.remove((handler.after_restore, (), {}))

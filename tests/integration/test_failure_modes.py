"""The failure model on a real server: a demoted writer, dead pooled connections, a
reader that is down, and a secret rotation in progress. Restarts, failovers and a
black-holed endpoint need servers of their own: tests/drills."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import replace

import boto3
import pytest
import sqlalchemy as sa
from moto import mock_aws
from psycopg import Connection
from sqlalchemy import exc as sa_exc

from dataaccess import Database
from dataaccess.credentials import SecretsManagerProvider
from dataaccess.resilience import is_unavailable
from drills.faults import TcpForwarder
from scripts.devdb import set_password
from scripts.localpg import free_port
from tests.lambda_.helpers import count_connect_attempts

REGION = "eu-west-1"


def backend_pids(admin: Connection, user: str) -> set[int]:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE usename = %s AND datname = current_database()",
        (user,),
    ).fetchall()
    return {pid for (pid,) in rows}


def wait_for_no_backends(admin: Connection, user: str) -> bool:
    """True once the server has no session of `user` (a closed one takes a moment to exit)."""
    for _ in range(50):
        if not backend_pids(admin, user):
            return True
        time.sleep(0.05)
    return False


def write(db: Database) -> int:
    """Touch a row through a writer unit of work; return the server process that did it."""
    with db.unit_of_work() as uow:
        pid = uow.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        uow.execute(sa.text("UPDATE products SET updated_at = now() WHERE false"))
        uow.commit()
    return int(pid)


def server_read_only(admin: Connection, on: bool) -> None:
    """Make the whole server read-only (or not), sessions already open too, as a demoted
    writer is; wait until the reload has reached the backends (it is asynchronous)."""
    if on:
        admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
    else:
        admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
    admin.execute("SELECT pg_reload_conf()")
    want = "on" if on else "off"
    for _ in range(100):
        if admin.execute("SHOW default_transaction_read_only").fetchone() == (want,):
            break
        time.sleep(0.02)
    time.sleep(0.2)  # the other backends take the signal at about the same time


@pytest.fixture
def read_only_server(admin: Connection) -> Iterator[None]:
    """The server read-only for the rest of the test."""
    server_read_only(admin, True)
    try:
        yield
    finally:
        server_read_only(admin, False)


def test_a_demoted_writer_invalidates_the_pool_and_no_connection_stays_on_it(
    app_settings, admin, request
):
    db = Database.from_settings(replace(app_settings, connect_retry_budget=1))
    request.addfinalizer(db.dispose)
    with db.writer.connect() as one, db.writer.connect() as two:  # two pooled connections
        assert one.scalar(sa.text("SELECT 1")) == two.scalar(sa.text("SELECT 1")) == 1
    assert len(backend_pids(admin, app_settings.user)) == 2

    request.getfixturevalue("read_only_server")
    with pytest.raises(sa_exc.DBAPIError) as caught:
        write(db)
    # 25006 on the writer: treated as a disconnect, so the API answers 503.
    assert caught.value.orig.pgcode == "25006"
    assert caught.value.connection_invalidated
    assert is_unavailable(caught.value)
    # The pool let go of every connection to the read-only server.
    assert wait_for_no_backends(admin, app_settings.user)
    # And refuses to log in to it again: target_session_attrs=read-write.
    with pytest.raises(sa_exc.OperationalError, match="read-only"):
        write(db)


def test_the_writer_recovers_without_a_restart_once_the_server_is_writable(
    app_settings, admin, request
):
    db = Database.from_settings(replace(app_settings, connect_retry_budget=1))
    request.addfinalizer(db.dispose)
    before = write(db)
    server_read_only(admin, True)
    try:
        with pytest.raises(sa_exc.DBAPIError):
            write(db)
    finally:
        server_read_only(admin, False)
    after = write(db)  # the same Database object: no process restart
    assert after != before


def test_a_read_only_login_is_retried_with_backoff_within_the_budget(
    app_settings, admin, monkeypatch, request
):
    db = Database.from_settings(replace(app_settings, connect_retry_budget=1))
    request.addfinalizer(db.dispose)
    attempts = count_connect_attempts(db.writer, monkeypatch)
    admin.execute(f'ALTER DATABASE "{app_settings.name}" SET default_transaction_read_only = on')
    try:
        with pytest.raises(sa_exc.OperationalError, match="read-only") as caught:
            write(db)
    finally:
        admin.execute(f'ALTER DATABASE "{app_settings.name}" RESET default_transaction_read_only')
    assert is_unavailable(caught.value)
    assert len(attempts) >= 2  # backoff from 0.1 s, doubling, within a 1 s budget


def test_a_write_read_only_unit_of_work_on_the_writer_is_a_bug_not_a_failover(db):
    pid = write(db)
    with pytest.raises(sa_exc.DBAPIError) as caught, db.unit_of_work(read_only=True) as uow:
        uow.execute(sa.text("UPDATE products SET stock = stock WHERE false"))
    assert caught.value.orig.pgcode == "25006"
    assert not caught.value.connection_invalidated
    assert write(db) == pid  # the pool kept its connection


def test_a_read_retries_once_on_a_fresh_connection_when_its_pooled_one_is_dead(db, admin):
    dead = write(db)
    admin.execute("SELECT pg_terminate_backend(%s, 5000)", (dead,))
    # Used moments ago, so the idle-only pre-ping skips it: the first statement finds it dead.
    with db.unit_of_work(read_only=True) as uow:
        pid = uow.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
    assert pid != dead


def test_a_write_on_a_dead_pooled_connection_is_not_retried(db, admin):
    dead = write(db)
    admin.execute("SELECT pg_terminate_backend(%s, 5000)", (dead,))
    with pytest.raises(sa_exc.DBAPIError) as caught:
        write(db)
    assert caught.value.connection_invalidated  # the caller (API: 503) decides to retry
    assert write(db) != dead


def test_reads_fall_back_to_the_writer_while_the_reader_is_down(app_settings, monkeypatch):
    settings = replace(app_settings, reader_host="localhost", port=app_settings.port)
    db = Database.from_settings(settings)
    # The reader engine points at a port where nothing listens.
    db.reader = sa.create_engine(f"postgresql+psycopg2://u@127.0.0.1:{free_port()}/x")
    reader_attempts = count_connect_attempts(db.reader, monkeypatch)
    try:
        for _ in range(3):
            with db.unit_of_work(read_only=True) as uow:
                assert (
                    uow.execute(
                        sa.text("SELECT current_setting('transaction_read_only')")
                    ).scalar_one()
                    == "on"
                )
        # One failed connect to the reader, then the cooldown sends reads straight to the writer.
        assert len(reader_attempts) == 1
        with db.unit_of_work() as uow:  # writes never consult the reader
            assert (
                uow.execute(sa.text("SELECT inet_server_port()")).scalar_one() == app_settings.port
            )
    finally:
        db.dispose()


@pytest.fixture
def secrets_client() -> Iterator[object]:
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)


def test_a_login_refused_during_a_rotation_waits_for_the_secret(
    secrets_client, app_settings, login_role, admin_settings, caplog
):
    def store(password: str) -> str:
        return json.dumps({"username": login_role, "password": password})

    arn = secrets_client.create_secret(Name="db/rot", SecretString=store("old-pw"))["ARN"]
    set_password(admin_settings, login_role, "old-pw")
    settings = replace(
        app_settings,
        auth="secret",
        user=None,  # the secret's
        password=None,
        secret_id=arn,
        region=REGION,
        connect_retry_budget=10,
    )
    provider = SecretsManagerProvider(secret_id=arn, region=REGION, ttl=3600, client=secrets_client)
    db = Database.from_settings(settings, credentials=provider)
    try:
        # setSecret: the server has the new password; finishSecret comes a second later.
        set_password(admin_settings, login_role, "new-pw")
        finish = threading.Timer(
            1.0,
            secrets_client.put_secret_value,
            kwargs={"SecretId": arn, "SecretString": store("new-pw")},
        )
        finish.start()
        with caplog.at_level(logging.INFO, logger="dataaccess.engine"), db.writer.connect() as conn:
            assert conn.scalar(sa.text("SELECT current_user")) == login_role
        finish.join()
    finally:
        db.dispose()
    refused = [r for r in caplog.records if "authentication failed" in r.getMessage()]
    assert refused, "the stale secret was refused at least once"
    assert provider.fetches == len(refused) + 1  # re-read after every refusal
    assert all(
        "new-pw" not in r.getMessage() and "old-pw" not in r.getMessage() for r in caplog.records
    )


def test_a_refused_secret_outside_a_rotation_fails_after_the_window(
    secrets_client, app_settings, login_role, admin_settings
):
    arn = secrets_client.create_secret(
        Name="db/wrong", SecretString=json.dumps({"username": login_role, "password": "wrong"})
    )["ARN"]
    set_password(admin_settings, login_role, "right")
    settings = replace(
        app_settings, auth="secret", secret_id=arn, secret_retry_window=1, connect_retry_budget=30
    )
    provider = SecretsManagerProvider(secret_id=arn, region=REGION, client=secrets_client)
    db = Database.from_settings(settings, credentials=provider)
    try:
        with pytest.raises(sa_exc.OperationalError, match="authentication failed"):
            db.writer.connect()
    finally:
        db.dispose()
    assert 2 <= provider.fetches < 10  # bounded by DB_SECRET_RETRY_WINDOW, not the budget


def test_a_connection_lost_after_the_work_is_done_does_not_fail_the_unit_of_work(db, admin):
    with db.unit_of_work(read_only=True) as uow:
        pid = uow.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
    # The read stood; its rollback on a dead connection was not an error, and the pool heals.
    with db.unit_of_work(read_only=True) as uow:
        assert uow.execute(sa.text("SELECT pg_backend_pid()")).scalar_one() != pid


def test_a_silent_peer_is_given_up_on_after_the_socket_timeout(app_settings):
    with TcpForwarder(app_settings.port) as endpoint:
        settings = replace(
            app_settings, port=endpoint.port, socket_timeout=1, connect_retry_budget=0
        )
        db = Database.from_settings(settings)
        try:
            pid = write(db)
            endpoint.blackhole(True)  # acknowledges, then never answers: keepalives see nothing
            started = time.monotonic()
            with pytest.raises(sa_exc.DBAPIError) as caught:
                write(db)
            waited = time.monotonic() - started
            assert caught.value.connection_invalidated  # never handed out again
            # A new connect meets the same silence and is bounded by its connect timeout.
            with pytest.raises(sa_exc.OperationalError):
                write(db)
            endpoint.blackhole(False)
            assert write(db) != pid
        finally:
            db.dispose()
    assert waited < settings.connect_timeout  # the 1 s socket bound, not a connect or TCP timeout

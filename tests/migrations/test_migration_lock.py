"""A deploy's `alembic upgrade head`, run as the migration task runs it (a process that
builds its engine from DB_* variables): two at once migrate once, and DDL that cannot
get its table lock fails fast instead of queueing every query behind it."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path

import psycopg
import pytest
from alembic.script import ScriptDirectory

from scripts.devdb import REPO, alembic_config, local_settings
from scripts.localpg import tls_env

pytestmark = pytest.mark.slow

# alembic/env.py's key; env.py is not importable on its own (it runs on import).
LOCK_KEY = int.from_bytes(hashlib.sha256(b"dataaccess migrations").digest()[:8], "big", signed=True)
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture
def target(empty_db, pg_cluster):
    """The migration task's environment for the empty database, and a superuser DSN."""
    engine, role = empty_db
    dbname = engine.url.database
    login = local_settings(
        host=pg_cluster.host,
        port=pg_cluster.port,
        dbname=dbname,
        user=pg_cluster.user,
        password=pg_cluster.password,
        **tls_env(pg_cluster.ca_file),
    )
    # No statement timeout, as cfn/migration.yaml sets it, nor the socket timeout from_env
    # derives from one.
    migration = replace(login, iam_user=role, statement_timeout_ms=0, socket_timeout=0)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DB_", "MIGRATION_"))},
        **migration.to_env(),
    }
    dsn = {
        "host": pg_cluster.host,
        "port": pg_cluster.port,
        "user": pg_cluster.user,
        "password": pg_cluster.password,
        "dbname": dbname,
        "autocommit": True,
    }
    return env, dsn


def alembic(env, *args, stderr_to=None):
    """`python -m alembic <args>` in the repository, as the migration container runs it."""
    return subprocess.Popen(
        [sys.executable, "-m", "alembic", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=stderr_to or subprocess.PIPE,
        text=True,
    )


def finish(proc, timeout=120):
    _, err = proc.communicate(timeout=timeout)
    return proc.returncode, err


def version(dsn):
    with psycopg.connect(**dsn) as conn:
        return conn.execute("SELECT version_num FROM alembic_version").fetchone()[0]


def wait_for(predicate, what, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.1)


def test_two_upgrades_at_once_migrate_once(target, tmp_path: Path):
    env, dsn = target
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    with ExitStack() as files, psycopg.connect(**dsn) as holder:
        # Hold the lock ourselves, so both runs are certainly waiting at the same time.
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        sinks = [files.enter_context(log.open("w")) for log in logs]
        procs = [alembic(env, "upgrade", "head", stderr_to=sink) for sink in sinks]
        wait_for(
            lambda: (
                all("another migration is running" in log.read_text() for log in logs)
                or any(p.poll() is not None for p in procs)
            ),
            "both upgrades to wait for the migration lock",
        )
        assert all(p.poll() is None for p in procs), [log.read_text() for log in logs]
        holder.execute("SELECT pg_advisory_unlock(%s)", (LOCK_KEY,))
        codes = [p.wait(timeout=120) for p in procs]
    assert codes == [0, 0], [log.read_text() for log in logs]
    output = "".join(log.read_text() for log in logs)
    # Every revision was applied by exactly one of the two runs.
    assert output.count("Running upgrade  -> 0001") == 1, output
    assert output.count(f"-> {HEAD},") == 1, output
    assert version(dsn) == HEAD


def test_ddl_that_cannot_get_its_lock_fails_fast_and_changes_nothing(target):
    env, dsn = target
    assert finish(alembic(env, "upgrade", "0004"))[0] == 0
    with psycopg.connect(**dsn) as blocker:
        blocker.autocommit = False
        # An open write transaction on products, as a busy API holds one: 0005's
        # CREATE INDEX needs a SHARE lock that conflicts with it.
        blocker.execute("LOCK TABLE products IN ROW EXCLUSIVE MODE")
        code, err = finish(alembic(env | {"MIGRATION_LOCK_TIMEOUT_MS": "300"}, "upgrade", "head"))
        blocker.rollback()
    assert code != 0
    assert "a table lock was not granted within 300 ms" in err, err
    assert version(dsn) == "0004"  # 0005 rolled back whole
    code, err = finish(alembic(env, "upgrade", "head"))
    assert code == 0, err
    assert version(dsn) == HEAD


def test_a_run_gives_up_when_another_holds_the_lock_too_long(target):
    env, dsn = target
    with psycopg.connect(**dsn) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (LOCK_KEY,))
        code, err = finish(alembic(env | {"MIGRATION_LOCK_WAIT_SECONDS": "1"}, "upgrade", "head"))
    assert code != 0
    assert "another migration still holds the migration lock after 1s" in err, err
    with psycopg.connect(**dsn) as conn:
        assert conn.execute("SELECT to_regclass('alembic_version')").fetchone()[0] is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("MIGRATION_LOCK_TIMEOUT_MS", "soon"), ("MIGRATION_LOCK_WAIT_SECONDS", "0")],
)
def test_bad_lock_settings_are_named(target, name, value):
    env, _ = target
    code, err = finish(alembic(env | {name: value}, "upgrade", "head"))
    assert code != 0
    assert f"alembic: {name} must be an integer" in err, err

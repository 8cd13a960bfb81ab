"""Alembic environment: the connection comes from the application, never from alembic.ini.

A caller may pass an open connection in ``config.attributes["connection"]``
(tests, the local launcher); otherwise the engine is built by dataaccess from
the DB_* variables: for deploys, the master credentials (injected by ECS with
DB_AUTH=password, or read from Secrets Manager with DB_AUTH=secret).
The IAM login role the migrations create is ``config.attributes["iam_user"]``,
else DB_IAM_USER, else ``app_iam``.

Two guards make a deploy safe to re-run and safe beside live traffic:

- one migration at a time: every run holds a PostgreSQL advisory lock
  (``MIGRATION_LOCK_KEY``) while it migrates; a second run waits up to
  MIGRATION_LOCK_WAIT_SECONDS (default 900) for it, then finds the schema at head
  and does nothing;
- no queue behind a blocked ``ALTER``: DDL waits at most MIGRATION_LOCK_TIMEOUT_MS
  (default 5000) for a table lock, then the migration fails (and rolls back)
  instead of holding every API query behind its place in the lock queue.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from logging.config import fileConfig

from alembic import context
from sqlalchemy import exc as sa_exc
from sqlalchemy import text
from sqlalchemy.engine import Connection

from dataaccess.settings import Settings, SettingsError, iam_login_role
from dataaccess.tables import metadata

config = context.config
if config.config_file_name is not None and not config.attributes.get("skip_logging_config"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)
log = logging.getLogger("alembic.env")


# The advisory lock's key for "a migration is running": fixed forever, so any two
# releases exclude each other.
MIGRATION_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"dataaccess migrations").digest()[:8], "big", signed=True
)


def _bounded_env(name: str, default: int, high: int) -> int:
    raw = os.environ.get(name, "").strip() or str(default)
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise SystemExit(f"alembic: {name} must be an integer between 1 and {high}; got {raw!r}")
    return int(raw)


_TRY_XACT_LOCK = text("SELECT pg_try_advisory_xact_lock(:key)")
_TRY_SESSION_LOCK = text("SELECT pg_try_advisory_lock(:key)")


@contextmanager
def one_migration_at_a_time(connection: Connection) -> Iterator[None]:
    """Hold the migration lock for the whole run; bound DDL's wait for table locks.

    A caller's connection that is already in a transaction (tests, the local launcher)
    runs every migration in it, so the lock and the timeout are that transaction's
    (released at its commit or rollback). On a connection of our own each migration
    commits by itself, so the lock is the session's and is released here.
    """
    wait_s = _bounded_env("MIGRATION_LOCK_WAIT_SECONDS", 900, 86_400)
    ddl_ms = _bounded_env("MIGRATION_LOCK_TIMEOUT_MS", 5000, 3_600_000)
    scoped = connection.in_transaction()
    # Polled rather than waited for, so no statement timeout cuts the wait short.
    try_lock = _TRY_XACT_LOCK if scoped else _TRY_SESSION_LOCK
    deadline = time.monotonic() + wait_s
    while not connection.execute(try_lock, {"key": MIGRATION_LOCK_KEY}).scalar_one():
        if time.monotonic() >= deadline:
            raise SystemExit(
                f"alembic: another migration still holds the migration lock after {wait_s}s "
                "(MIGRATION_LOCK_WAIT_SECONDS); is an earlier migration task still running?"
            )
        log.info("another migration is running; waiting for it to finish")
        time.sleep(2)
    connection.execute(
        text("SELECT set_config('lock_timeout', :value, :local)"),
        {"value": f"{ddl_ms}ms", "local": scoped},
    )
    if not scoped:
        connection.commit()
    try:
        yield
    except sa_exc.OperationalError as exc:
        if getattr(exc.orig, "pgcode", None) == "55P03":  # lock_not_available
            raise SystemExit(
                f"alembic: a table lock was not granted within {ddl_ms} ms "
                "(MIGRATION_LOCK_TIMEOUT_MS) because a long transaction holds it; the "
                "migration that waited was rolled back; re-run when that transaction is gone"
            ) from None
        raise
    finally:
        if not scoped and not connection.invalidated:
            if connection.in_transaction():
                connection.rollback()
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()


def run(connection: Connection, iam_user: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        compare_type=True,
        compare_server_default=True,
        transaction_per_migration=True,
    )
    context.config.attributes["iam_user"] = iam_user
    with one_migration_at_a_time(connection), context.begin_transaction():
        context.run_migrations()


def main() -> None:
    if context.is_offline_mode():
        raise SystemExit("offline (--sql) mode is not supported: roles need a live server")
    connection = config.attributes.get("connection")
    iam_user = config.attributes.get("iam_user")
    if connection is not None:
        run(connection, iam_user or iam_login_role())
        return
    from dataaccess.engine import create_engine

    try:
        # The migration budget: wait out a restart or a resume from 0 ACU before migrating.
        settings = Settings.from_env(runtime="migration")
    except SettingsError as exc:
        raise SystemExit(f"alembic: {exc}") from None
    engine = create_engine(settings)
    try:
        with engine.connect() as conn:
            run(conn, iam_user or settings.iam_user)
    finally:
        engine.dispose()


main()

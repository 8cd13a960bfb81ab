"""Alembic environment: the connection comes from the application, never from alembic.ini.

A caller may pass an open connection in ``config.attributes["connection"]``
(tests, the local launcher); otherwise the engine is built by dataaccess from
the DB_* variables: for deploys, the master credentials (injected by ECS with
DB_AUTH=password, or read from Secrets Manager with DB_AUTH=secret).
The IAM login role the migrations create is ``config.attributes["iam_user"]``,
else DB_IAM_USER, else ``app_iam``.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from dataaccess.models import Base
from dataaccess.settings import Settings, SettingsError, iam_login_role

config = context.config
if config.config_file_name is not None and not config.attributes.get("skip_logging_config"):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def run(connection: Connection, iam_user: str) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=True,
        compare_server_default=True,
        transaction_per_migration=True,
    )
    context.config.attributes["iam_user"] = iam_user
    with context.begin_transaction():
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

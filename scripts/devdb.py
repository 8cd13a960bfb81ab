"""Helpers shared by the local run, the tests and the benchmarks: settings for a
local cluster, Alembic upgrades from Python, and login passwords for local roles."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import Connection

from dataaccess import Settings, create_engine
from scripts.localpg import tls_env

REPO = Path(__file__).resolve().parent.parent
APP_ROLE = "app_iam"


def local_settings(
    *, host: str, port: int, dbname: str, user: str, password: str, **env: str
) -> Settings:
    """Settings for a local server, built through the same DB_* contract as production."""
    return Settings.from_env(
        {
            "DB_HOST": host,
            "DB_PORT": str(port),
            "DB_NAME": dbname,
            "DB_USER": user,
            "DB_AUTH": "password",
            "DB_PASSWORD": password,
            **tls_env(None),
            **env,
        }
    )


class Server(Protocol):
    """A running local cluster: scripts.localpg.LocalPostgres, or the tests' Cluster."""

    host: str
    port: int
    user: str
    password: str


def superuser_settings(server: Server, dbname: str) -> Settings:
    """Settings for `dbname` on `server` as its superuser (the migration user)."""
    return local_settings(
        host=server.host,
        port=server.port,
        dbname=dbname,
        user=server.user,
        password=server.password,
    )


def alembic_config(connection: Connection | None = None, *, iam_user: str = APP_ROLE) -> Config:
    """The project's alembic.ini, optionally bound to an open connection."""
    config = Config(str(REPO / "alembic.ini"))
    config.attributes["iam_user"] = iam_user
    config.attributes["skip_logging_config"] = True
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def migrate(admin: Settings, revision: str = "head", *, iam_user: str = APP_ROLE) -> None:
    """`alembic upgrade <revision>` as the admin (migration) user."""
    engine = create_engine(admin, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn, iam_user=iam_user), revision)
    finally:
        engine.dispose()


def set_password(admin: Settings, role: str, password: str) -> None:
    """Give a role a password: locally the app logs in with one instead of an IAM token."""
    engine = create_engine(admin, poolclass=sa.NullPool)
    try:
        with engine.begin() as conn:
            quoted = conn.dialect.identifier_preparer.quote(role)
            # ALTER ROLE takes no server-side parameters, but psycopg2 quotes
            # them client-side: safe for any password, '%' (IAM tokens) included.
            conn.exec_driver_sql(
                f"ALTER ROLE {quoted} LOGIN PASSWORD %(password)s", {"password": password}
            )
    finally:
        engine.dispose()

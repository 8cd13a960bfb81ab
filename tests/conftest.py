"""Shared fixtures: one throwaway PostgreSQL cluster per test session, migrated once
with Alembic into a template database; every test gets a fresh copy of it."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from psycopg import Connection
from pytest_postgresql import factories

from dataaccess import Database, Settings
from scripts.devdb import APP_ROLE, local_settings, migrate, set_password, superuser_settings
from scripts.localpg import LocalPostgres, free_port, usable_root

TEST_DB = "dataaccess_test"
# Per session: the cluster is new every run, so nothing outlives it.
APP_PASSWORD = secrets.token_urlsafe(16)


@dataclass(frozen=True)
class Cluster:
    """What pytest-postgresql's noproc factory needs from a base server (`depends_on`)."""

    host: str
    port: int
    user: str
    password: str
    options: str = ""
    maintenance_dbname: str = "postgres"
    template_dbname: str | None = None
    ca_file: str | None = None  # the server's self-signed certificate, when TLS is on


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """Start a cluster (as an unprivileged OS user when root) and stop it at the end."""
    # One folder per run: several runs (developers, CI, benchmarks) may share a checkout.
    root = usable_root(Path(__file__).resolve().parent.parent / ".localpg" / f"tests-{os.getpid()}")
    server = LocalPostgres(root, free_port())
    try:
        server.start()
        ca = str(server.ca_file) if server.ca_file else None
        yield Cluster(server.host, server.port, server.user, server.password, ca_file=ca)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def migrate_template(
    host: str, port: int, user: str, dbname: str, password: str, **_: object
) -> None:
    """pytest-postgresql loader: alembic upgrade head on the template database."""
    admin = local_settings(host=host, port=port, dbname=dbname, user=user, password=password)
    migrate(admin)
    set_password(admin, APP_ROLE, APP_PASSWORD)


postgresql_migrated = factories.postgresql_noproc(
    dbname=TEST_DB, depends_on="pg_cluster", load=[migrate_template]
)
postgresql = factories.postgresql("postgresql_migrated")


@pytest.fixture
def admin_settings(postgresql: Connection, pg_cluster: Cluster) -> Settings:
    """Settings for this test's fresh database as the superuser (the migration user)."""
    return superuser_settings(pg_cluster, postgresql.info.dbname)


@pytest.fixture
def app_settings(postgresql: Connection, pg_cluster: Cluster) -> Settings:
    """Settings for this test's fresh database as the least-privilege application role."""
    return local_settings(
        host=pg_cluster.host,
        port=pg_cluster.port,
        dbname=postgresql.info.dbname,
        user=APP_ROLE,
        password=APP_PASSWORD,
    )


@pytest.fixture
def db(app_settings: Settings) -> Iterator[Database]:
    """A Database for this test, logged in as the application role."""
    database = Database.from_settings(app_settings)
    yield database
    database.dispose()


@pytest.fixture
def admin(postgresql: Connection) -> Connection:
    """A superuser psycopg connection to this test's database, in autocommit."""
    postgresql.autocommit = True
    return postgresql


@pytest.fixture
def login_role(admin: Connection) -> Iterator[str]:
    """A throwaway login role with the app role's privileges; each test sets its password."""
    name = f"login_{secrets.token_hex(4)}"
    admin.execute(f'CREATE ROLE "{name}" LOGIN IN ROLE {APP_ROLE}')
    yield name
    admin.execute(f'DROP ROLE IF EXISTS "{name}"')

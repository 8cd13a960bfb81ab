"""An empty database per test, for the migration checks."""

import secrets

import psycopg
import pytest
import sqlalchemy as sa

from dataaccess import create_engine
from scripts.devdb import superuser_settings


@pytest.fixture
def empty_db(pg_cluster):
    """A brand-new empty database and a role name no other test uses."""
    name = f"migr_{secrets.token_hex(4)}"
    dsn = {
        "host": pg_cluster.host,
        "port": pg_cluster.port,
        "user": pg_cluster.user,
        "password": pg_cluster.password,
        "dbname": "postgres",
        "autocommit": True,
    }
    with psycopg.connect(**dsn) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    settings = superuser_settings(pg_cluster, name)
    engine = create_engine(settings, poolclass=sa.NullPool)
    yield engine, f"{name}_iam"
    engine.dispose()
    with psycopg.connect(**dsn) as admin:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.execute(f'DROP ROLE IF EXISTS "{name}_iam"')

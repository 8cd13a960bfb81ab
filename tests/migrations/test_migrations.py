"""The four migration checks, with Alembic's own API: one head, upgrade from empty,
models match the migrated DDL, and every revision downgrades and upgrades again."""

import ast
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from dataaccess import create_engine
from dataaccess.tables import metadata
from scripts.devdb import alembic_config, local_settings


def migrate(engine, role, action, revision):
    with engine.begin() as conn:
        action(alembic_config(conn, iam_user=role), revision)


def diff(engine):
    with engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, metadata)


def tables(engine):
    return set(sa.inspect(engine).get_table_names()) - {"alembic_version"}


def role_exists(engine, role):
    with engine.connect() as conn:
        return conn.scalar(sa.text("SELECT count(*) FROM pg_roles WHERE rolname = :r"), {"r": role})


def test_single_head():
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


def test_upgrade_from_empty_to_head_matches_the_tables(empty_db):
    engine, role = empty_db
    assert tables(engine) == set()
    migrate(engine, role, command.upgrade, "head")
    assert tables(engine) == set(metadata.tables)
    assert diff(engine) == []
    assert role_exists(engine, role) == 1


def test_every_revision_goes_down_and_up_again(empty_db):
    engine, role = empty_db
    script = ScriptDirectory.from_config(alembic_config())
    revisions = [r.revision for r in reversed(list(script.walk_revisions()))]
    for revision in revisions:
        migrate(engine, role, command.upgrade, revision)
        migrate(engine, role, command.downgrade, "-1")
        migrate(engine, role, command.upgrade, revision)
    migrate(engine, role, command.downgrade, "base")
    assert tables(engine) == set()
    assert role_exists(engine, role) == 0  # nothing else depended on it, so it went too
    migrate(engine, role, command.upgrade, "head")
    assert diff(engine) == []


def test_the_login_role_cannot_create_temporary_objects(empty_db, pg_cluster):
    engine, role = empty_db
    migrate(engine, role, command.upgrade, "head")
    with engine.begin() as conn:
        conn.exec_driver_sql(f"ALTER ROLE \"{role}\" PASSWORD 'temp-check'")
    login = local_settings(
        host=pg_cluster.host,
        port=pg_cluster.port,
        dbname=engine.url.database,
        user=role,
        password="temp-check",
    )
    as_role = create_engine(login, poolclass=sa.NullPool)
    with as_role.connect() as conn, pytest.raises(sa.exc.ProgrammingError) as caught:
        conn.exec_driver_sql("CREATE TEMP TABLE sneaky (id int)")
    assert caught.value.orig.pgcode == "42501"
    as_role.dispose()


def test_migrations_are_frozen_in_time():
    """A migration imports no application code: a later change there must not change
    what an old migration does (each copies the constants it needs)."""
    versions = Path(__file__).resolve().parents[2] / "alembic" / "versions"
    ours = {"dataaccess", "api", "scripts", "lambda", "drills", "bench", "tests"}
    offenders = {}
    for path in sorted(versions.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            bad = [n for n in names if n.split(".")[0] in ours]
            if bad:
                offenders.setdefault(path.name, []).extend(bad)
    assert len(list(versions.glob("*.py"))) >= 7
    assert offenders == {}


def role_timeout(engine, role):
    with engine.connect() as conn:
        return conn.scalar(
            sa.text(
                "SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_roles r "
                "ON r.oid = s.setrole WHERE r.rolname = :r AND s.setdatabase = 0"
            ),
            {"r": role},
        )


def test_0007_downgrade_keeps_a_timeout_another_database_relies_on(empty_db, postgresql):
    # Role settings belong to the cluster: the tests' template database (behind
    # `postgresql`) grants the app role CONNECT, so its timeout must survive here.
    engine, own_role = empty_db
    # A role no other database uses loses it.
    migrate(engine, own_role, command.upgrade, "head")
    assert role_timeout(engine, own_role) == ["statement_timeout=30000ms"]
    migrate(engine, own_role, command.downgrade, "0006")
    assert role_timeout(engine, own_role) is None
    migrate(engine, own_role, command.downgrade, "base")
    # The app role, which the template database also lets in, keeps it.
    migrate(engine, "app_iam", command.upgrade, "head")
    migrate(engine, "app_iam", command.downgrade, "0006")
    assert role_timeout(engine, "app_iam") == ["statement_timeout=30000ms"]
    migrate(engine, "app_iam", command.downgrade, "base")

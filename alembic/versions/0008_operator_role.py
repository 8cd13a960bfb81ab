"""An IAM login role for operators

Operators had no login of their own: the only IAM logins were the application's
writer (0002) and the report's reader (0006), and the master password is for
migrations. ``app_operator`` is what someone investigating production needs, and
no more:

- read every table of the schema as it stands here (``SELECT``; the ones listed in
  ``READ_TABLES``), with schema ``USAGE`` and ``CONNECT``; no sequence, no column
  grant, nothing by default on tables later migrations create;
- see every session and its statement, and the statistics views
  (``pg_read_all_stats``: ``pg_stat_activity`` of other roles, ``pg_stat_statements``),
  not ``pg_monitor``, whose ``pg_stat_scan_tables`` runs functions that lock tables;
- cancel or terminate the application's backends (``pg_signal_backend``; never a
  superuser's);
- membership in ``rds_iam``, so RDS accepts IAM tokens for it.

It cannot insert, update or delete, owns nothing, cannot create roles, databases or
objects (no ``CREATE`` on the schema, which 0002 took from PUBLIC) or temporary
tables (``TEMPORARY``, which 0003 took from PUBLIC, is not granted).

The role name is ``config.attributes["iam_operator_user"]``, else
DB_IAM_OPERATOR_USER, else ``app_operator`` (Terraform's ``db_operator_user``),
validated like DB_IAM_USER. It must differ from the writer, the reader and the
migrating user: a mistyped setting must not give operators a login that writes.

Roles belong to the whole cluster, as in 0002 and 0006: upgrade creates the role
only when missing (and refuses one with administrative attributes), downgrade
revokes this database's grants and drops the role only when nothing else
(another database's grants) still depends on it. Role memberships are the
cluster's too, so they go with the role, never before it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

import os
import re
from collections.abc import Sequence

from alembic import context, op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Frozen here, not imported: a later change to the application's settings must not
# change what this migration did. The same rule as DB_IAM_USER: a letter, then
# letters, digits or underscores, at most 63 characters (the name also lands in
# string literals inside DO blocks, where quoting alone would not protect it).
_ROLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")

DEFAULT_OPERATOR = "app_operator"
DEFAULT_READER = "app_reader"
# Every table of the schema at this revision (0001's and Alembic's own).
READ_TABLES = ("customers", "products", "orders", "order_lines", "stock_events", "alembic_version")
# PostgreSQL's predefined roles: see all activity and statistics; signal backends.
OPERATOR_ROLES = ("pg_read_all_stats", "pg_signal_backend")


def _checked(name: str, variable: str) -> str:
    if not _ROLE_NAME.fullmatch(name):
        raise ValueError(
            f"{variable} must be a PostgreSQL role name: a letter, then letters, digits "
            f"or underscores, at most 63 characters; got {name!r}"
        )
    return name


def _quoted(name: str) -> str:
    return op.get_bind().dialect.identifier_preparer.quote_identifier(name)


def _setting(attribute: str, variable: str, default: str) -> str:
    name = context.config.attributes.get(attribute) or os.environ.get(variable, "").strip()
    return _checked(name or default, variable)


def _operator_name() -> str:
    operator = _setting("iam_operator_user", "DB_IAM_OPERATOR_USER", DEFAULT_OPERATOR)
    others = {
        _checked(context.config.attributes["iam_user"], "DB_IAM_USER"): "the application role",
        _setting("iam_reader_user", "DB_IAM_READER_USER", DEFAULT_READER): "the reader role",
    }
    if operator in others:
        raise ValueError(
            f"DB_IAM_OPERATOR_USER must not be {others[operator]} {operator!r}: "
            "operators get a login of their own"
        )
    return operator


def upgrade() -> None:
    name = _operator_name()
    role, literal = _quoted(name), f"'{name}'"  # _checked allows no quote character
    op.execute(
        f"""
        DO $$
        BEGIN
            IF {literal} = current_user THEN
                RAISE EXCEPTION 'the operator role % must not be the migrating user', {literal};
            END IF;
            -- RDS has rds_iam; a plain PostgreSQL (local, tests) gets a stand-in.
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam') THEN
                CREATE ROLE rds_iam NOLOGIN;
            END IF;
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {literal}) THEN
                CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS;
            ELSIF EXISTS (
                SELECT FROM pg_roles WHERE rolname = {literal}
                  AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls)
            ) THEN
                RAISE EXCEPTION 'the operator role % exists with administrative attributes',
                    {literal};
            END IF;
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO {role}', current_database());
        END
        $$
        """
    )
    op.execute(f"GRANT rds_iam, {', '.join(OPERATOR_ROLES)} TO {role}")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    op.execute(f"GRANT SELECT ON {', '.join(READ_TABLES)} TO {role}")


def downgrade() -> None:
    name = _operator_name()
    role, literal = _quoted(name), f"'{name}'"
    op.execute(f"REVOKE ALL ON {', '.join(READ_TABLES)} FROM {role}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {role}")
    # Outside the block below, whose exception handler would roll it back: a
    # role kept for another database still loses this one's CONNECT.
    op.execute(
        "DO $$ BEGIN EXECUTE format("
        f"'REVOKE CONNECT ON DATABASE %I FROM {role}', current_database()); END $$"
    )
    op.execute(
        f"""
        DO $$
        BEGIN
            DROP ROLE {role};
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'role % still has grants elsewhere; kept', {literal};
        END
        $$
        """
    )

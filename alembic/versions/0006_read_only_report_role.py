"""A read-only IAM login role for the report

The report function read as the application's writer role, which may insert
customers and orders and update products. It gets a login role of its own:
``SELECT`` on exactly the tables the report reads (``dataaccess/reports.py``:
``products`` and ``orders``), schema ``USAGE`` and ``CONNECT``, membership in
``rds_iam``; nothing on ``customers`` (emails), ``order_lines``,
``stock_events``, ``alembic_version`` or any sequence, and no DML: the
privileges refuse writes whatever the session's transaction mode.

The role deliberately gets no ``default_transaction_read_only = on``: libpq
(PostgreSQL 14 and later) reports that setting at login, and the writer engine's
``target_session_attrs=read-write`` then refuses every connection of the role
("session is read-only"), which breaks the report's fall-back from an
unreachable reader endpoint to the writer, and any deployment without a
reader endpoint. The report's unit of work is ``READ ONLY`` already
(``unit_of_work(read_only=True)``).

The role name is ``config.attributes["iam_reader_user"]``, else
DB_IAM_READER_USER, else ``app_reader``, validated like DB_IAM_USER. It must
differ from the writer role (``config.attributes["iam_user"]``) and from the
migrating user: a mistyped setting must not give the report a login that can write.

Roles belong to the whole cluster, as in 0002: upgrade creates the role only
when missing, and downgrade revokes this database's grants and drops the role
only when nothing else (another database's grants) still depends on it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

import os
import re
from collections.abc import Sequence

from alembic import context, op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Frozen here, not imported: a later change to the application's settings must not
# change what this migration did. The same rule as DB_IAM_USER: a letter, then
# letters, digits or underscores, at most 63 characters (the name also lands in
# string literals inside DO blocks, where quoting alone would not protect it).
_ROLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")


def _checked(name: str, variable: str = "DB_IAM_USER") -> str:
    if not _ROLE_NAME.fullmatch(name):
        raise ValueError(
            f"{variable} must be a PostgreSQL role name: a letter, then letters, digits "
            f"or underscores, at most 63 characters; got {name!r}"
        )
    return name


def _quoted(name: str) -> str:
    return op.get_bind().dialect.identifier_preparer.quote_identifier(name)


DEFAULT_READER = "app_reader"
# What dataaccess/reports.py reads: low_stock (products) and order_totals (orders).
READ_TABLES = ("products", "orders")


def _reader_name() -> str:
    attributes = context.config.attributes
    name = attributes.get("iam_reader_user") or os.environ.get("DB_IAM_READER_USER", "").strip()
    reader = _checked(name or DEFAULT_READER, "DB_IAM_READER_USER")
    writer = _checked(attributes["iam_user"])
    if reader == writer:
        raise ValueError(
            f"DB_IAM_READER_USER must not be the application role {writer!r}: "
            "the reader role is read-only"
        )
    return reader


def _role() -> str:
    return _quoted(_reader_name())


def _literal() -> str:
    # For string literals inside DO blocks; _checked allows no quote character.
    return f"'{_reader_name()}'"


def upgrade() -> None:
    role, literal = _role(), _literal()
    op.execute(
        f"""
        DO $$
        BEGIN
            IF {literal} = current_user THEN
                RAISE EXCEPTION 'the reader role % must not be the migrating user', {literal};
            END IF;
            -- RDS has rds_iam; a plain PostgreSQL (local, tests) gets a stand-in.
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam') THEN
                CREATE ROLE rds_iam NOLOGIN;
            END IF;
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {literal}) THEN
                CREATE ROLE {role} LOGIN;
            ELSIF EXISTS (
                SELECT FROM pg_roles WHERE rolname = {literal}
                  AND (rolsuper OR rolcreaterole OR rolcreatedb OR rolbypassrls)
            ) THEN
                RAISE EXCEPTION 'the reader role % exists with administrative attributes',
                    {literal};
            END IF;
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO {role}', current_database());
        END
        $$
        """
    )
    op.execute(f"GRANT rds_iam TO {role}")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    for table in READ_TABLES:
        op.execute(f"GRANT SELECT ON {table} TO {role}")


def downgrade() -> None:
    role, literal = _role(), _literal()
    for table in READ_TABLES:
        op.execute(f"REVOKE ALL ON {table} FROM {role}")
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

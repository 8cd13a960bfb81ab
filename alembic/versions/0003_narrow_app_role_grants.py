"""Narrow the IAM login role's grants to what the application does

0002 gave the role SELECT, INSERT, UPDATE and DELETE on every table. The code
needs less, and least privilege means granting only that:

- customers:   SELECT, INSERT
- products:    SELECT, INSERT, UPDATE (stock and price changes; row locks)
- orders:      SELECT, INSERT, UPDATE (cancellation; row locks)
- order_lines: SELECT, INSERT
- stock_events: SELECT, INSERT, DELETE (ingest removes its own uncommitted
  rows for rejected events; the ledger is otherwise append-only)

Future tables get SELECT and INSERT by default; a migration that needs more
grants it explicitly. PUBLIC also loses TEMPORARY on this database, so the role
cannot create temporary tables or functions either.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import re
from collections.abc import Sequence

from alembic import context, op

revision: str = "0003"
down_revision: str | None = "0002"
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


# What each table keeps; 0002 granted SELECT, INSERT, UPDATE, DELETE on all.
KEEP = {
    "customers": "SELECT, INSERT",
    "products": "SELECT, INSERT, UPDATE",
    "orders": "SELECT, INSERT, UPDATE",
    "order_lines": "SELECT, INSERT",
    "stock_events": "SELECT, INSERT, DELETE",
}
DML = "SELECT, INSERT, UPDATE, DELETE"


def _role() -> str:
    return _quoted(_checked(context.config.attributes["iam_user"]))


# The database's name is only known on the server.
REVOKE_TEMPORARY = """
    DO $$ BEGIN
        EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    END $$
"""
GRANT_TEMPORARY = """
    DO $$ BEGIN
        EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', current_database());
    END $$
"""


def upgrade() -> None:
    role = _role()
    for table, privileges in KEEP.items():
        op.execute(f"REVOKE {DML} ON {table} FROM {role}")
        op.execute(f"GRANT {privileges} ON {table} TO {role}")
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE UPDATE, DELETE ON TABLES FROM {role}"
    )
    op.execute(REVOKE_TEMPORARY)


def downgrade() -> None:
    role = _role()
    op.execute(GRANT_TEMPORARY)
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {DML} ON TABLES TO {role}")
    for table in KEEP:
        op.execute(f"GRANT {DML} ON {table} TO {role}")

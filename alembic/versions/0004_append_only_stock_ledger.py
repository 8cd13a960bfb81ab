"""Make the stock-event ledger append-only for the IAM login role

0003 left the role DELETE on stock_events, because ingest removed its own
uncommitted ledger rows for events it then rejected. Ingest now decides before
it inserts, so the role needs only SELECT and INSERT there: a compromised
application can no longer delete ledger rows to have events applied twice.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

import re
from collections.abc import Sequence

from alembic import context, op

revision: str = "0004"
down_revision: str | None = "0003"
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


def _role() -> str:
    return _quoted(_checked(context.config.attributes["iam_user"]))


def upgrade() -> None:
    op.execute(f"REVOKE DELETE ON stock_events FROM {_role()}")


def downgrade() -> None:
    op.execute(f"GRANT DELETE ON stock_events TO {_role()}")

"""Make the stock-event ledger append-only for the IAM login role

0003 left the role DELETE on stock_events, because ingest removed its own
uncommitted ledger rows for events it then rejected. Ingest now decides before
it inserts, so the role needs only SELECT and INSERT there: a compromised
application can no longer delete ledger rows to have events applied twice.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27
"""

from collections.abc import Sequence

from alembic import context, op

from dataaccess.settings import iam_login_role

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _role() -> str:
    return '"' + iam_login_role({"DB_IAM_USER": context.config.attributes["iam_user"]}) + '"'


def upgrade() -> None:
    op.execute(f"REVOKE DELETE ON stock_events FROM {_role()}")


def downgrade() -> None:
    op.execute(f"GRANT DELETE ON stock_events TO {_role()}")

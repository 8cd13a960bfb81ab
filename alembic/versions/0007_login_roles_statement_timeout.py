"""The login roles' own statement_timeout, for connections through RDS Proxy

Through RDS Proxy (DB_PROXY=true) the package cannot set the statement timeout
itself: the proxy refuses a login that carries startup options
(``options=-c statement_timeout=...``, what dataaccess sends to the cluster),
and a ``SET``, even ``SET LOCAL``, pins the client to one database connection.
So the application's login roles get it as their own default, ``ALTER ROLE ...
SET statement_timeout``: the server applies it whenever a session of the role
starts, the proxy's own connections included, and the client sends nothing.

- The roles: the IAM login role (``config.attributes["iam_user"]``, as in 0002)
  and the report's read-only role (``config.attributes["iam_reader_user"]``,
  else DB_IAM_READER_USER, else ``app_reader``, as in 0006).
- The value: 30 s, dataaccess's DB_STATEMENT_TIMEOUT_MS default, copied here
  (a migration imports no application code, so it keeps meaning what it meant).
- The cost: none per transaction. ``python -m bench.statement_timeout`` timed a
  point read at 1.01 times the login option's cost this way, against 1.29 for a
  ``SET LOCAL`` sent as each transaction's first statement and 1.21 for one
  prepended to the statement's text (median of 10,000 reads each, loopback),
  and either ``SET`` would pin the session besides.
- Direct connections still send their own DB_STATEMENT_TIMEOUT_MS at login, and
  that wins: a client's startup options rank above a role's settings.
- The migrating user gets nothing: a role's settings apply to sessions that log
  in as that role, never through membership, so migrations keep
  DB_STATEMENT_TIMEOUT_MS=0 (and they connect to the cluster, not the proxy).

Roles belong to the whole cluster, and so does this default: ``ALTER ROLE ...
IN DATABASE`` would be keyed to this database's OID and lost by a copy of it
(the tests' per-test copies of a migrated template). So downgrade resets it
only for a role no other database grants CONNECT to (0005 revoked PUBLIC's, so
each database that uses the role grants it): like 0006 keeping a reader another
database still uses, a downgrade here must not take the timeout from another
database's sessions.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import os
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# dataaccess.settings' DB_STATEMENT_TIMEOUT_MS default, in ms.
STATEMENT_TIMEOUT_MS = 30_000
DEFAULT_READER = "app_reader"


def _roles() -> list[str]:
    """The writer and reader login roles."""
    attributes = context.config.attributes
    writer = attributes["iam_user"]
    reader = (
        attributes.get("iam_reader_user")
        or os.environ.get("DB_IAM_READER_USER", "").strip()
        or DEFAULT_READER
    )
    return list(dict.fromkeys((writer, reader)))


def _quoted(name: str) -> str:
    return op.get_bind().dialect.identifier_preparer.quote_identifier(name)


def upgrade() -> None:
    for role in _roles():
        op.execute(f"ALTER ROLE {_quoted(role)} SET statement_timeout = '{STATEMENT_TIMEOUT_MS}ms'")


# Another database's own CONNECT grant to the role (not PUBLIC's, as on `postgres`).
_USED_ELSEWHERE = sa.text(
    "SELECT EXISTS (SELECT 1 FROM pg_database d, aclexplode(d.datacl) a "
    "WHERE d.datname <> current_database() AND a.privilege_type = 'CONNECT' "
    "AND a.grantee = (SELECT oid FROM pg_roles WHERE rolname = :role))"
)


def downgrade() -> None:
    for role in _roles():
        if op.get_bind().execute(_USED_ELSEWHERE, {"role": role}).scalar():
            continue
        op.execute(f"ALTER ROLE {_quoted(role)} RESET statement_timeout")

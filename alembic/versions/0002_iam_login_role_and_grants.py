"""IAM login role with least-privilege grants

The application logs in as this role with an RDS IAM token: membership in
``rds_iam`` is what makes RDS accept tokens for it. It may read and write rows
and use sequences; it may not create, alter, drop or truncate anything, and it
cannot touch Alembic's version table. The role name is DB_IAM_USER (default
``app_iam``), passed by env.py in ``config.attributes["iam_user"]``.

Roles belong to the whole cluster, not to one database, so upgrade creates
them only when missing and downgrade drops the login role only when nothing
else (another database's grants) still depends on it.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

import re
from collections.abc import Sequence

from alembic import context, op

revision: str = "0002"
down_revision: str | None = "0001"
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


DML = "SELECT, INSERT, UPDATE, DELETE"


def _role() -> str:
    # Validated here too: a caller may pass any string in config.attributes.
    return _quoted(_checked(context.config.attributes["iam_user"]))


def upgrade() -> None:
    role = _role()
    op.execute(
        f"""
        DO $$
        BEGIN
            -- RDS has rds_iam; a plain PostgreSQL (local, tests) gets a stand-in.
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'rds_iam') THEN
                CREATE ROLE rds_iam NOLOGIN;
            END IF;
            IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {_literal()}) THEN
                CREATE ROLE {role} LOGIN;
            END IF;
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO {role}', current_database());
        END
        $$
        """
    )
    op.execute(f"GRANT rds_iam TO {role}")
    # PostgreSQL 15 no longer lets PUBLIC create in schema public; older
    # servers (and restored dumps) still might, so say it explicitly.
    op.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
    op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
    op.execute(f"GRANT {DML} ON ALL TABLES IN SCHEMA public TO {role}")
    op.execute(f"REVOKE ALL ON alembic_version FROM {role}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}")
    # Tables and sequences that later migrations create (as this same
    # migrating user) get the same grants without anyone remembering to.
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT {DML} ON TABLES TO {role}")
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}"
    )


def downgrade() -> None:
    role = _role()
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE {DML} ON TABLES FROM {role}")
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE, SELECT ON SEQUENCES FROM {role}"
    )
    op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}")
    op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
    op.execute(f"REVOKE USAGE ON SCHEMA public FROM {role}")
    op.execute(
        f"""
        DO $$
        BEGIN
            EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM {role}', current_database());
            DROP ROLE {role};
        EXCEPTION WHEN dependent_objects_still_exist THEN
            RAISE NOTICE 'role % still has grants elsewhere; kept', {_literal()};
        END
        $$
        """
    )


def _literal() -> str:
    # For string literals inside DO blocks; _checked allows no quote character.
    return f"'{_checked(context.config.attributes['iam_user'])}'"

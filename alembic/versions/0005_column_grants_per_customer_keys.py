"""Column-level UPDATE, no default privileges, PUBLIC off the database, per-customer keys

Five findings of the security review, in one revision:

- The IAM login role may UPDATE only the columns the code changes:
  ``orders(status, cancelled_at)`` (cancellation) and ``products(name,
  price_cents, stock, updated_at)`` (PATCH, orders and their cancellation,
  stock events). Column-level UPDATE also covers the row locks
  (``FOR [NO KEY] UPDATE``) that orders, cancellations and ingest take.
- No default privileges: 0002 (narrowed by 0003) had every table and sequence
  the migrating user creates later readable and writable by the role. Those
  are revoked; each migration grants what its own tables need, as this one
  does for the existing tables, explicitly.
- PUBLIC loses CONNECT (and TEMPORARY, which 0003 took already) on this
  database; the role keeps CONNECT by its explicit grant (0002, re-granted
  here). Only the current database is touched: other databases on the cluster
  (``postgres``, templates, others') are the deployer's to lock down.
- Idempotency keys are unique per customer, ``UNIQUE (customer_id,
  idempotency_key)``, instead of globally, so one customer can neither claim
  nor probe another's keys.
- ``products (stock, sku)`` is indexed for the low-stock reads: the report
  (``WHERE stock < :t ORDER BY stock, sku``) walks it in order, and
  ``GET /products?stock_below=`` (``WHERE stock < :n ORDER BY sku``) reads only
  the matching range instead of every product.

Downgrade restores 0004's state. Going back to a globally unique key fails if
two customers have used the same key since; that is data, not a bug to hide.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

import re
from collections.abc import Sequence

from alembic import context, op

revision: str = "0005"
down_revision: str | None = "0004"
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


# Table-level privileges, stated explicitly now that nothing comes by default
# (all of them were held already: granting them again changes nothing).
TABLES = {
    "customers": "SELECT, INSERT",
    "products": "SELECT, INSERT",
    "orders": "SELECT, INSERT",
    "order_lines": "SELECT, INSERT",
    "stock_events": "SELECT, INSERT",
}
# The only columns any statement of the application updates (repositories.py,
# ingest). 0003 granted UPDATE on the whole of both tables.
UPDATE_COLUMNS = {
    "orders": ("status", "cancelled_at"),
    "products": ("name", "price_cents", "stock", "updated_at"),
}
# The bigserial ids' sequences (0001), as 0002 granted them.
SEQUENCES = ("customers_id_seq", "products_id_seq", "orders_id_seq", "order_lines_id_seq")

OLD_KEY = "uq_orders_idempotency_key"
NEW_KEY = "uq_orders_customer_id_idempotency_key"
STOCK_INDEX = "ix_products_stock_sku"


def _role() -> str:
    return _quoted(_checked(context.config.attributes["iam_user"]))


def upgrade() -> None:
    role = _role()

    # 1. UPDATE on exactly the columns the code changes. Revoking the
    # table-level privilege first: a column grant beside it would add nothing.
    for table, privileges in TABLES.items():
        op.execute(f"GRANT {privileges} ON {table} TO {role}")
    for table, columns in UPDATE_COLUMNS.items():
        op.execute(f"REVOKE UPDATE ON {table} FROM {role}")
        op.execute(f"GRANT UPDATE ({', '.join(columns)}) ON {table} TO {role}")
    for sequence in SEQUENCES:
        op.execute(f"GRANT USAGE, SELECT ON SEQUENCE {sequence} TO {role}")

    # 2. Nothing by default for tables and sequences created later. Default
    # privileges belong to the role that creates the objects: the migrating user.
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT, INSERT ON TABLES FROM {role}"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE, SELECT ON SEQUENCES FROM {role}"
    )

    # 3. PUBLIC off this database. The migrating user must not lock itself out:
    # it owns the database (the Aurora master user owns DatabaseName's), is a
    # superuser, or holds CONNECT by a grant of its own.
    op.execute(
        f"""
        DO $$
        BEGIN
            IF NOT EXISTS (
                SELECT FROM pg_database AS d, pg_roles AS r
                WHERE d.datname = current_database() AND r.rolname = current_user
                  AND (r.rolsuper OR pg_has_role(current_user, d.datdba, 'MEMBER')
                       OR EXISTS (
                           SELECT FROM aclexplode(d.datacl) AS a
                           WHERE a.privilege_type = 'CONNECT' AND a.grantee <> 0
                             AND pg_has_role(current_user, a.grantee, 'MEMBER')))
            ) THEN
                RAISE EXCEPTION 'migrate % as its owner: % would lose CONNECT with PUBLIC',
                    current_database(), current_user;
            END IF;
            EXECUTE format('GRANT CONNECT ON DATABASE %I TO {role}', current_database());
            EXECUTE format(
                'REVOKE CONNECT, TEMPORARY ON DATABASE %I FROM PUBLIC', current_database()
            );
        END
        $$
        """
    )

    # 4. Idempotency keys per customer: the new constraint first, so a key is
    # never unconstrained, then the global one goes.
    op.create_unique_constraint(NEW_KEY, "orders", ["customer_id", "idempotency_key"])
    op.drop_constraint(OLD_KEY, "orders", type_="unique")

    # 5. The low-stock access path.
    op.create_index(STOCK_INDEX, "products", ["stock", "sku"])


def downgrade() -> None:
    role = _role()
    op.drop_index(STOCK_INDEX, table_name="products")
    op.create_unique_constraint(OLD_KEY, "orders", ["idempotency_key"])
    op.drop_constraint(NEW_KEY, "orders", type_="unique")
    # TEMPORARY stays revoked from PUBLIC, as 0003 left it; CONNECT comes back.
    op.execute(
        "DO $$ BEGIN EXECUTE format("
        "'GRANT CONNECT ON DATABASE %I TO PUBLIC', current_database()); END $$"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO {role}"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {role}"
    )
    # REVOKE on the table takes the column grants with it; then UPDATE on all
    # columns, as 0003 granted it. The other grants were 0002's and 0003's already.
    for table in UPDATE_COLUMNS:
        op.execute(f"REVOKE UPDATE ON {table} FROM {role}")
        op.execute(f"GRANT UPDATE ON {table} TO {role}")

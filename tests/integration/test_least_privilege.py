"""The application role reads and writes rows, and nothing more."""

import pytest
import sqlalchemy as sa

DML = [
    "SELECT count(*) FROM products",
    "INSERT INTO products (sku, name, price_cents, stock) VALUES ('LP-1', 'x', 1, 1)",
    "UPDATE products SET stock = stock + 1 WHERE sku = 'LP-1'",
    "INSERT INTO customers (email, name) VALUES ('lp@example.com', 'x')",
    "SELECT id FROM products WHERE sku = 'LP-1' FOR NO KEY UPDATE",
]

# Database-level privileges (TEMPORARY, revoked by 0003) do not survive
# CREATE DATABASE ... TEMPLATE, which makes these per-test databases; that one
# is tested on a directly migrated database in tests/migrations.
FORBIDDEN = [
    "CREATE TABLE sneaky (id int)",
    "DROP TABLE order_lines",
    "ALTER TABLE products ADD COLUMN sneaky int",
    "TRUNCATE products",
    "CREATE SCHEMA sneaky",
    "CREATE INDEX sneaky ON products (name)",
    "UPDATE alembic_version SET version_num = 'x'",
    "CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "DELETE FROM products",
    "DELETE FROM customers",
    "DELETE FROM orders",
    "UPDATE customers SET name = 'x'",
    "UPDATE order_lines SET quantity = 1",
    "UPDATE stock_events SET delta = 0",
    # The ledger is append-only (0004): deleting a row would let an event apply twice.
    "DELETE FROM stock_events",
]


def test_app_role_can_do_dml(db):
    with db.writer.begin() as conn:
        assert conn.scalar(sa.text("SELECT current_user")) == "app_iam"
        for statement in DML:
            conn.execute(sa.text(statement))


@pytest.mark.parametrize("statement", FORBIDDEN)
def test_app_role_cannot_change_the_schema(db, statement):
    with db.writer.connect() as conn, pytest.raises(sa.exc.DBAPIError) as caught:
        conn.execute(sa.text(statement))
    assert caught.value.orig.pgcode in {"42501"}, caught.value  # insufficient_privilege


def test_app_role_is_an_rds_iam_member_without_superpowers(admin):
    row = admin.execute(
        "SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, "
        "pg_has_role('app_iam', 'rds_iam', 'MEMBER') FROM pg_roles WHERE rolname = 'app_iam'"
    ).fetchone()
    assert row == (False, False, False, False, True)

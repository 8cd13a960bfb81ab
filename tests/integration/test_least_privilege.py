"""The application role reads and writes rows, and nothing more."""

import datetime as dt
import secrets
import threading
import time
from dataclasses import replace

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command

from dataaccess import Database, create_engine, reports, services
from dataaccess.services import LineRequest
from scripts.devdb import APP_ROLE, alembic_config, superuser_settings

DML = [
    "SELECT count(*) FROM products",
    "INSERT INTO products (sku, name, price_cents, stock) VALUES ('LP-1', 'x', 1, 1)",
    "UPDATE products SET stock = stock + 1 WHERE sku = 'LP-1'",
    "INSERT INTO customers (email, name) VALUES ('lp@example.com', 'x')",
    "SELECT id FROM products WHERE sku = 'LP-1' FOR NO KEY UPDATE",
    # Column-level UPDATE (0005): the columns PATCH, orders, cancellations and
    # stock events change, and the row locks that need UPDATE on some column.
    "UPDATE products SET name = 'y', price_cents = 2, stock = stock - 1, updated_at = now() "
    "WHERE sku = 'LP-1'",
    "INSERT INTO orders (customer_id, total_cents, idempotency_key) "
    "SELECT id, 1, 'lp-key' FROM customers WHERE email = 'lp@example.com'",
    "SELECT id FROM orders WHERE idempotency_key = 'lp-key' FOR UPDATE",
    "UPDATE orders SET status = 'cancelled', cancelled_at = now() WHERE idempotency_key = 'lp-key'",
]

# What the role may UPDATE (0005); every other column of every table is refused.
UPDATABLE = {
    "orders": {"status", "cancelled_at"},
    "products": {"name", "price_cents", "stock", "updated_at"},
}

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
    # Column-level UPDATE (0005): an order's amount, owner and key, a product's sku.
    "UPDATE orders SET total_cents = 0",
    "UPDATE orders SET customer_id = 1",
    "UPDATE orders SET idempotency_key = 'x'",
    "UPDATE orders SET request_fingerprint = 'x'",
    "UPDATE orders SET created_at = now()",
    "UPDATE orders SET id = 1",
    "UPDATE orders SET status = 'cancelled', total_cents = 0",
    "UPDATE products SET sku = 'x'",
    "UPDATE products SET id = 1",
    "UPDATE products SET created_at = now()",
    "UPDATE products SET stock = 1, sku = 'x'",
    "INSERT INTO products (sku, name, price_cents) VALUES ('LP-2', 'x', 1) "
    "ON CONFLICT (sku) DO UPDATE SET sku = 'x'",
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


def test_update_is_granted_on_exactly_the_columns_the_code_changes(admin):
    rows = admin.execute(
        "SELECT c.relname, a.attname, has_column_privilege(%s, c.oid, a.attnum, 'UPDATE'), "
        "has_table_privilege(%s, c.oid, 'UPDATE') "
        "FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
        "WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' "
        "AND a.attnum > 0 AND NOT a.attisdropped",
        [APP_ROLE, APP_ROLE],
    ).fetchall()
    assert {table for table, *_ in rows} >= {"customers", "orders", "order_lines", "products"}
    updatable = {}
    for table, column, column_update, table_update in rows:
        assert not table_update, table  # no table-level UPDATE anywhere
        if column_update:
            updatable.setdefault(table, set()).add(column)
    assert updatable == UPDATABLE


def test_a_table_created_after_the_migrations_is_not_the_app_roles(admin, db):
    # Created by the migration user, as a later migration would: nothing by default (0005).
    admin.execute("CREATE TABLE later_table (id bigserial PRIMARY KEY, note text)")
    admin.execute("INSERT INTO later_table (note) VALUES ('x')")
    for statement in [
        "SELECT * FROM later_table",
        "INSERT INTO later_table (id, note) VALUES (2, 'y')",
        "SELECT nextval('later_table_id_seq')",
    ]:
        with db.writer.connect() as conn, pytest.raises(sa.exc.DBAPIError) as caught:
            conn.execute(sa.text(statement))
        assert caught.value.orig.pgcode == "42501", statement
    defaults = admin.execute(
        "SELECT count(*) FROM pg_default_acl d, aclexplode(d.defaclacl) a "
        "WHERE a.grantee = %s::regrole",
        [APP_ROLE],
    ).fetchone()
    assert defaults == (0,)


# Database-level privileges do not survive CREATE DATABASE ... TEMPLATE, which
# makes the per-test databases: these tests migrate a database of their own.


@pytest.fixture
def own_database(admin, pg_cluster):
    """A new empty database on the test cluster, its superuser settings and an engine."""
    name = f"lp_{secrets.token_hex(4)}"
    admin.execute(f'CREATE DATABASE "{name}"')
    engine = create_engine(superuser_settings(pg_cluster, name), poolclass=sa.NullPool)
    yield name, engine
    engine.dispose()
    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def migrate(engine, action, revision):
    with engine.begin() as conn:
        action(alembic_config(conn, iam_user=APP_ROLE), revision)


def test_public_has_no_connect_or_temporary_on_the_database(
    admin, pg_cluster, app_settings, own_database
):
    name, engine = own_database
    migrate(engine, command.upgrade, "head")
    privileges = admin.execute(
        "SELECT has_database_privilege('public', %(db)s, 'CONNECT'), "
        "has_database_privilege('public', %(db)s, 'TEMPORARY'), "
        "has_database_privilege(%(role)s, %(db)s, 'CONNECT'), "
        "has_database_privilege(%(role)s, %(db)s, 'TEMPORARY')",
        {"db": name, "role": APP_ROLE},
    ).fetchone()
    assert privileges == (False, False, True, False)

    # The app role still connects, by its own grant, and still makes no temporary objects.
    as_app = create_engine(replace(app_settings, name=name), poolclass=sa.NullPool)
    try:
        with as_app.connect() as conn:
            assert conn.scalar(sa.text("SELECT current_database()")) == name
            with pytest.raises(sa.exc.ProgrammingError) as caught:
                conn.execute(sa.text("CREATE TEMP TABLE sneaky (id int)"))
            assert caught.value.orig.pgcode == "42501"
    finally:
        as_app.dispose()

    # A role with only what PUBLIC has is turned away here, though not from a
    # database whose privileges are the defaults (this test's template copy).
    outsider, password = f"outsider_{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    admin.execute(f"CREATE ROLE \"{outsider}\" LOGIN PASSWORD '{password}'")
    try:
        login = {
            "host": pg_cluster.host,
            "port": pg_cluster.port,
            "user": outsider,
            "password": password,
        }
        with psycopg.connect(**login, dbname=app_settings.name) as conn:
            assert conn.execute("SELECT current_user").fetchone() == (outsider,)
        with pytest.raises(psycopg.OperationalError, match="permission denied for database"):
            psycopg.connect(**login, dbname=name).close()
    finally:
        admin.execute(f'DROP ROLE "{outsider}"')


# Every grant the role holds or could get in the database, and its schema objects.
SNAPSHOT = """
SELECT 'table', c.relname, '', a.grantor::regrole::text,
       CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, a.privilege_type
FROM pg_class c, aclexplode(c.relacl) a WHERE c.relnamespace = 'public'::regnamespace
UNION ALL
SELECT 'column', c.relname, t.attname, a.grantor::regrole::text,
       CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, a.privilege_type
FROM pg_class c JOIN pg_attribute t ON t.attrelid = c.oid, aclexplode(t.attacl) a
WHERE c.relnamespace = 'public'::regnamespace
UNION ALL
SELECT 'default', d.defaclobjtype::text, coalesce(d.defaclnamespace::regnamespace::text, ''),
       d.defaclrole::regrole::text,
       CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, a.privilege_type
FROM pg_default_acl d, aclexplode(d.defaclacl) a
UNION ALL
SELECT 'database', '', '', a.grantor::regrole::text,
       CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, a.privilege_type
FROM pg_database d, aclexplode(coalesce(d.datacl, acldefault('d', d.datdba))) a
WHERE d.datname = current_database()
UNION ALL
SELECT 'schema', n.nspname, '', a.grantor::regrole::text,
       CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END, a.privilege_type
FROM pg_namespace n, aclexplode(coalesce(n.nspacl, acldefault('n', n.nspowner))) a
WHERE n.nspname = 'public'
UNION ALL
SELECT 'constraint', conrelid::regclass::text, conname, pg_get_constraintdef(oid), '', ''
FROM pg_constraint WHERE connamespace = 'public'::regnamespace
UNION ALL
SELECT 'index', tablename, indexname, indexdef, '', '' FROM pg_indexes WHERE schemaname = 'public'
"""


def snapshot(engine):
    with engine.connect() as conn:
        return {tuple(row) for row in conn.execute(sa.text(SNAPSHOT))}


def test_0005_downgrades_to_exactly_what_0004_left(own_database):
    _, engine = own_database
    migrate(engine, command.upgrade, "0004")
    before = snapshot(engine)
    migrate(engine, command.upgrade, "0005")
    after = snapshot(engine)
    gone, added = before - after, after - before
    for table in UPDATABLE:
        assert ("table", table, "", "UPDATE") in {(r[0], r[1], r[2], r[5]) for r in gone}
    assert {("column", "orders", "status", "UPDATE")} <= {(r[0], r[1], r[2], r[5]) for r in added}
    assert {r[0] for r in gone if r[4] == APP_ROLE} >= {"table", "default"}
    assert ("database", "PUBLIC", "CONNECT") in {(r[0], r[4], r[5]) for r in gone}
    assert "uq_orders_customer_id_idempotency_key" in {r[2] for r in added}
    assert "ix_products_stock_sku" in {r[2] for r in added}
    migrate(engine, command.downgrade, "0004")
    assert snapshot(engine) == before


# --- The report's read-only role (0006) ------------------------------------------

READER_ROLE = "app_reader"
# What dataaccess/reports.py reads; nothing else in the schema is the reader's.
READABLE = {"products", "orders"}
WRITES = {
    "products": [
        "INSERT INTO products (sku, name, price_cents) VALUES ('RD-1', 'x', 1)",
        "UPDATE products SET stock = 0",
        "DELETE FROM products",
    ],
    "orders": [
        "INSERT INTO orders (customer_id, total_cents) VALUES (1, 1)",
        "UPDATE orders SET status = 'cancelled'",
        "DELETE FROM orders",
    ],
    "customers": [
        "INSERT INTO customers (email, name) VALUES ('rd@example.com', 'x')",
        "UPDATE customers SET name = 'x'",
        "DELETE FROM customers",
    ],
    "order_lines": [
        "INSERT INTO order_lines (order_id, product_id, sku, quantity, unit_price_cents) "
        "VALUES (1, 1, 'x', 1, 1)",
        "UPDATE order_lines SET quantity = 1",
        "DELETE FROM order_lines",
    ],
    "stock_events": [
        "INSERT INTO stock_events (event_id, product_id, delta, reason, occurred_at) "
        "VALUES ('rd', 1, 1, 'x', now())",
        "UPDATE stock_events SET delta = 0",
        "DELETE FROM stock_events",
    ],
    "alembic_version": [
        "INSERT INTO alembic_version VALUES ('x')",
        "UPDATE alembic_version SET version_num = 'x'",
        "DELETE FROM alembic_version",
    ],
}
READER_WRITES = [statement for statements in WRITES.values() for statement in statements] + [
    "TRUNCATE products",
    "SELECT nextval('orders_id_seq')",
    "SELECT id FROM products FOR UPDATE",
    "SELECT id FROM orders FOR NO KEY UPDATE",
    "CREATE TABLE sneaky (id int)",
    # TEMPORARY is a database privilege, which the template copies do not keep:
    # checked on a migrated database of its own below.
]
# Read by nothing in the report: customers hold emails.
READER_REFUSED_READS = [
    "SELECT email FROM customers",
    "SELECT count(*) FROM customers",
    "SELECT * FROM order_lines",
    "SELECT * FROM stock_events",
    "SELECT * FROM alembic_version",
    "SELECT last_value FROM orders_id_seq",
]


@pytest.fixture
def reader_login(admin, pg_cluster, postgresql):
    """psycopg connect() arguments for this test's database as the reader role."""
    password = secrets.token_urlsafe(16)
    admin.execute(f"ALTER ROLE {READER_ROLE} PASSWORD '{password}'")
    return {
        "host": pg_cluster.host,
        "port": pg_cluster.port,
        "user": READER_ROLE,
        "password": password,
        "dbname": postgresql.info.dbname,
        "autocommit": True,
    }


def refused(login, statement, *, begin="BEGIN"):
    """The SQLSTATE the server answers `statement` with, inside `begin`."""
    with psycopg.connect(**login) as conn:
        conn.execute(begin)
        with pytest.raises(psycopg.Error) as caught:
            conn.execute(statement)
        return caught.value.sqlstate


def test_reader_role_is_an_rds_iam_login_without_superpowers(admin):
    row = admin.execute(
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, "
        "pg_has_role(%(r)s, 'rds_iam', 'MEMBER'), pg_has_role(%(r)s, %(app)s, 'MEMBER'), "
        "coalesce(rolconfig, '{}') FROM pg_roles WHERE rolname = %(r)s",
        {"r": READER_ROLE, "app": APP_ROLE},
    ).fetchone()
    # Its one role setting is the statement timeout (0007, for RDS Proxy mode). Never
    # default_transaction_read_only = on: libpq's target_session_attrs=read-write
    # (the writer engine) would refuse the role (0006).
    assert row[:-1] == (True, False, False, False, False, True, False)
    assert [s for s in row[-1] if not s.startswith("statement_timeout=")] == []


def test_reader_role_holds_select_on_the_report_tables_and_nothing_else(admin):
    grants = admin.execute(
        "SELECT c.relname, c.relkind::text, a.privilege_type "
        "FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.relnamespace = 'public'::regnamespace AND a.grantee = %s::regrole",
        [READER_ROLE],
    ).fetchall()
    assert set(grants) == {(table, "r", "SELECT") for table in READABLE}
    columns = admin.execute(
        "SELECT count(*) FROM pg_attribute t, aclexplode(t.attacl) a WHERE a.grantee = %s::regrole",
        [READER_ROLE],
    ).fetchone()
    assert columns == (0,)
    defaults = admin.execute(
        "SELECT count(*) FROM pg_default_acl d, aclexplode(d.defaclacl) a "
        "WHERE a.grantee = %s::regrole",
        [READER_ROLE],
    ).fetchone()
    assert defaults == (0,)
    schema = admin.execute(
        "SELECT has_schema_privilege(%(r)s, 'public', 'USAGE'), "
        "has_schema_privilege(%(r)s, 'public', 'CREATE')",
        {"r": READER_ROLE},
    ).fetchone()
    assert schema == (True, False)


def test_reader_role_builds_the_report(db, app_settings, reader_login):
    with db.unit_of_work() as uow:
        customer = services.create_customer(uow, email="rd@example.com", name="R").id
    with db.unit_of_work() as uow:
        services.create_product(uow, sku="RD-LOW", name="low", price_cents=5, stock=3)
    with db.unit_of_work() as uow:
        services.place_order(uow, customer_id=customer, lines=[LineRequest("RD-LOW", 1)])

    as_reader = replace(app_settings, user=READER_ROLE, password=reader_login["password"])
    reader_db = Database.from_settings(as_reader)
    try:
        with reader_db.writer.connect() as conn:
            assert conn.scalar(sa.text("SELECT current_user")) == READER_ROLE
        now = sa.func.now()
        with reader_db.unit_of_work(read_only=True) as uow:
            low = reports.low_stock(uow, threshold=10)
            until = uow.execute(sa.select(now + sa.text("interval '1 minute'"))).scalar_one()
            totals = reports.order_totals(uow, since=until - dt.timedelta(hours=1), until=until)
        assert [(item.sku, item.stock) for item in low] == [("RD-LOW", 2)]
        assert (totals.placed.count, totals.placed.total_cents) == (1, 5)
        with reader_db.unit_of_work(read_only=True) as uow:
            assert uow.execute(sa.text("SHOW transaction_read_only")).scalar_one() == "on"
        # A unit of work that is not read-only gets no further than the privileges.
        with pytest.raises(sa.exc.DBAPIError) as caught, reader_db.unit_of_work() as uow:
            uow.execute(sa.text("UPDATE products SET stock = 0"))
        assert caught.value.orig.pgcode == "42501"
    finally:
        reader_db.dispose()


@pytest.mark.parametrize("statement", READER_WRITES)
def test_reader_role_cannot_write_even_in_a_read_write_transaction(reader_login, statement):
    assert refused(reader_login, statement) == "42501"
    assert refused(reader_login, statement, begin="BEGIN READ WRITE") == "42501"
    with psycopg.connect(**reader_login) as conn:
        conn.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)


@pytest.mark.parametrize("statement", READER_REFUSED_READS)
def test_reader_role_cannot_read_what_the_report_does_not(reader_login, statement):
    assert refused(reader_login, statement) == "42501"


def migrate_with_reader(engine, action, revision, reader):
    with engine.begin() as conn:
        config = alembic_config(conn, iam_user=APP_ROLE)
        config.attributes["iam_reader_user"] = reader
        action(config, revision)


def test_0006_downgrades_to_exactly_what_0005_left(admin, pg_cluster, own_database):
    name, engine = own_database
    reader = f"reader_{secrets.token_hex(4)}"
    migrate_with_reader(engine, command.upgrade, "0005", reader)
    before = snapshot(engine)
    migrate_with_reader(engine, command.upgrade, "0006", reader)
    added = snapshot(engine) - before
    assert {(r[0], r[1], r[5]) for r in added if r[4] == reader} == {
        ("database", "", "CONNECT"),
        ("schema", "public", "USAGE"),
        ("table", "products", "SELECT"),
        ("table", "orders", "SELECT"),
    }
    assert all(r[4] == reader for r in added), added

    # PUBLIC has no CONNECT here (0005): the reader logs in by its own grant.
    admin.execute(f"ALTER ROLE \"{reader}\" PASSWORD 'reader-check'")
    login = {"host": pg_cluster.host, "port": pg_cluster.port, "dbname": name}
    with psycopg.connect(**login, user=reader, password="reader-check") as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TEMP TABLE sneaky (id int)")

    migrate_with_reader(engine, command.downgrade, "0005", reader)
    assert snapshot(engine) == before
    # Nothing else depended on this reader: the role went too.
    assert admin.execute(
        "SELECT count(*) FROM pg_roles WHERE rolname = %s", [reader]
    ).fetchone() == (0,)


def test_0006_downgrade_keeps_a_reader_that_another_database_still_uses(admin, own_database):
    # The default reader holds grants in the tests' template database as well.
    _, engine = own_database
    migrate_with_reader(engine, command.upgrade, "head", READER_ROLE)
    migrate_with_reader(engine, command.downgrade, "0005", READER_ROLE)
    with engine.connect() as conn:
        assert not conn.scalar(
            sa.text("SELECT has_database_privilege(:r, current_database(), 'CONNECT')"),
            {"r": READER_ROLE},
        )
    assert admin.execute(
        "SELECT count(*) FROM pg_roles WHERE rolname = %s", [READER_ROLE]
    ).fetchone() == (1,)


@pytest.mark.parametrize("reader", [APP_ROLE, "app-reader; DROP ROLE x", "1reader"])
def test_0006_refuses_a_reader_that_is_the_app_role_or_not_a_plain_name(own_database, reader):
    _, engine = own_database
    migrate_with_reader(engine, command.upgrade, "0005", reader)
    with pytest.raises(ValueError, match="DB_IAM_READER_USER"):
        migrate_with_reader(engine, command.upgrade, "0006", reader)


# --- The operators' role (0008) --------------------------------------------------

OPERATOR_ROLE = "app_operator"
# Every table at 0008: the operator reads them all, and writes none.
OPERATOR_READS = [f"SELECT count(*) FROM {table}" for table in WRITES]
OPERATOR_REFUSED = [statement for statements in WRITES.values() for statement in statements] + [
    "TRUNCATE products",
    "SELECT nextval('orders_id_seq')",
    "SELECT id FROM products FOR UPDATE",
    "CREATE TABLE sneaky (id int)",
    "CREATE SCHEMA sneaky",
    "CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE ROLE sneaky",
    "ALTER ROLE app_iam PASSWORD 'x'",
    "ALTER TABLE products ADD COLUMN sneaky int",
    # TEMPORARY is a database privilege, which the template copies do not keep:
    # checked on a migrated database of its own below.
]


def login_as(pg_cluster, dbname, user, password):
    """psycopg connect() arguments for `dbname` as `user`, in autocommit."""
    return {
        "host": pg_cluster.host,
        "port": pg_cluster.port,
        "user": user,
        "password": password,
        "dbname": dbname,
        "autocommit": True,
    }


@pytest.fixture
def operator_login(admin, pg_cluster, postgresql):
    """psycopg connect() arguments for this test's database as the operator role."""
    password = secrets.token_urlsafe(16)
    admin.execute(f"ALTER ROLE {OPERATOR_ROLE} PASSWORD '{password}'")
    return login_as(pg_cluster, postgresql.info.dbname, OPERATOR_ROLE, password)


@pytest.fixture
def app_login(app_settings, pg_cluster):
    """psycopg connect() arguments for this test's database as the application role."""
    return login_as(pg_cluster, app_settings.name, APP_ROLE, app_settings.password)


def test_operator_role_is_an_rds_iam_login_that_owns_and_administers_nothing(admin):
    row = admin.execute(
        "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolbypassrls, rolreplication, "
        "pg_has_role(%(r)s, 'rds_iam', 'MEMBER'), "
        "pg_has_role(%(r)s, 'pg_read_all_stats', 'MEMBER'), "
        "pg_has_role(%(r)s, 'pg_signal_backend', 'MEMBER'), "
        "pg_has_role(%(r)s, 'pg_monitor', 'MEMBER'), "
        "pg_has_role(%(r)s, 'pg_stat_scan_tables', 'MEMBER'), "
        "pg_has_role(%(r)s, 'pg_write_all_data', 'MEMBER'), "
        "pg_has_role(%(r)s, %(app)s, 'MEMBER'), pg_has_role(%(r)s, %(reader)s, 'MEMBER') "
        "FROM pg_roles WHERE rolname = %(r)s",
        {"r": OPERATOR_ROLE, "app": APP_ROLE, "reader": READER_ROLE},
    ).fetchone()
    assert row == (True, False, False, False, False, False, True, True, True) + (False,) * 5
    owned = admin.execute(
        "SELECT (SELECT count(*) FROM pg_class WHERE relowner = %(r)s::regrole) "
        "+ (SELECT count(*) FROM pg_namespace WHERE nspowner = %(r)s::regrole) "
        "+ (SELECT count(*) FROM pg_proc WHERE proowner = %(r)s::regrole) "
        "+ (SELECT count(*) FROM pg_type WHERE typowner = %(r)s::regrole)",
        {"r": OPERATOR_ROLE},
    ).fetchone()
    assert owned == (0,)
    schema = admin.execute(
        "SELECT has_schema_privilege(%(r)s, 'public', 'USAGE'), "
        "has_schema_privilege(%(r)s, 'public', 'CREATE')",
        {"r": OPERATOR_ROLE},
    ).fetchone()
    assert schema == (True, False)


def test_operator_role_holds_select_on_every_table_and_nothing_else(admin):
    grants = admin.execute(
        "SELECT c.relname, a.privilege_type FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.relnamespace = 'public'::regnamespace AND a.grantee = %s::regrole",
        [OPERATOR_ROLE],
    ).fetchall()
    assert set(grants) == {(table, "SELECT") for table in WRITES}
    for query in (
        "SELECT count(*) FROM pg_attribute t, aclexplode(t.attacl) a WHERE a.grantee = %s::regrole",
        "SELECT count(*) FROM pg_default_acl d, aclexplode(d.defaclacl) a "
        "WHERE a.grantee = %s::regrole",
    ):
        assert admin.execute(query, [OPERATOR_ROLE]).fetchone() == (0,)


@pytest.mark.parametrize("statement", OPERATOR_READS)
def test_operator_role_reads_every_table(operator_login, statement):
    with psycopg.connect(**operator_login) as conn:
        assert conn.execute(statement).fetchone()[0] >= 0


@pytest.mark.parametrize("statement", OPERATOR_REFUSED)
def test_operator_role_writes_nothing_and_creates_nothing(operator_login, statement):
    assert refused(operator_login, statement) == "42501"
    assert refused(operator_login, statement, begin="BEGIN READ WRITE") == "42501"


def wait_until_active(conn, pid, marker, timeout=10.0):
    """The pg_stat_activity row of `pid` once it runs the statement holding `marker`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = conn.execute(
            "SELECT usename, state, query FROM pg_stat_activity WHERE pid = %s", [pid]
        ).fetchone()
        if row is not None and row[1] == "active" and marker in row[2]:
            return row
        time.sleep(0.05)
    raise AssertionError(f"backend {pid} never showed {marker!r}: {row}")


def test_operator_sees_the_applications_statement_and_cancels_it(
    app_login, operator_login, reader_login
):
    marker = f"operator_probe_{secrets.token_hex(4)}"
    failures: list[BaseException] = []
    with psycopg.connect(**app_login) as app:
        pid = app.info.backend_pid

        def run() -> None:
            try:
                app.execute(f"SELECT pg_sleep(60) AS {marker}")
            except psycopg.Error as error:
                failures.append(error)

        worker = threading.Thread(target=run)
        worker.start()
        try:
            with psycopg.connect(**operator_login) as operator:
                user, _, query = wait_until_active(operator, pid, marker)
                assert user == APP_ROLE
                assert marker in query
                # Without pg_read_all_stats a role sees that the session exists, not what it runs.
                with psycopg.connect(**reader_login) as reader:
                    (hidden,) = reader.execute(
                        "SELECT query FROM pg_stat_activity WHERE pid = %s", [pid]
                    ).fetchone()
                    assert hidden == "<insufficient privilege>"
                assert operator.execute("SELECT pg_cancel_backend(%s)", [pid]).fetchone() == (True,)
        finally:
            worker.join(timeout=20)
    assert not worker.is_alive()
    assert [type(f) for f in failures] == [psycopg.errors.QueryCanceled]


def test_operator_terminates_an_application_session(app_login, operator_login):
    with psycopg.connect(**app_login) as app, psycopg.connect(**operator_login) as operator:
        pid = app.info.backend_pid
        assert operator.execute("SELECT pg_terminate_backend(%s, 5000)", [pid]).fetchone() == (
            True,
        )
        with pytest.raises(psycopg.OperationalError):
            app.execute("SELECT 1")


def test_operator_cannot_signal_a_superusers_backend(admin, operator_login):
    with psycopg.connect(**operator_login) as operator:
        for signal in ("pg_cancel_backend", "pg_terminate_backend"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                operator.execute(f"SELECT {signal}(%s)", [admin.info.backend_pid])
    assert admin.execute("SELECT 1").fetchone() == (1,)


def migrate_with_operator(engine, action, revision, operator):
    with engine.begin() as conn:
        config = alembic_config(conn, iam_user=APP_ROLE)
        config.attributes["iam_operator_user"] = operator
        action(config, revision)


def test_0008_downgrades_to_exactly_what_0007_left(admin, pg_cluster, own_database):
    name, engine = own_database
    operator = f"operator_{secrets.token_hex(4)}"
    migrate_with_operator(engine, command.upgrade, "0007", operator)
    before = snapshot(engine)
    migrate_with_operator(engine, command.upgrade, "0008", operator)
    added = snapshot(engine) - before
    assert {(r[0], r[1], r[5]) for r in added} == {
        ("database", "", "CONNECT"),
        ("schema", "public", "USAGE"),
        *{("table", table, "SELECT") for table in WRITES},
    }
    assert all(r[4] == operator for r in added), added

    # PUBLIC has no CONNECT or TEMPORARY here (0003, 0005): the operator logs in by
    # its own grant, reads, and makes no temporary objects either.
    admin.execute(f"ALTER ROLE \"{operator}\" PASSWORD 'operator-check'")
    with psycopg.connect(**login_as(pg_cluster, name, operator, "operator-check")) as conn:
        assert conn.execute("SELECT count(*) FROM customers").fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("CREATE TEMP TABLE sneaky (id int)")

    migrate_with_operator(engine, command.downgrade, "0007", operator)
    assert snapshot(engine) == before
    # Nothing else depended on this operator: the role, and its memberships, went too.
    assert admin.execute(
        "SELECT count(*) FROM pg_roles WHERE rolname = %s", [operator]
    ).fetchone() == (0,)


def test_0008_downgrade_keeps_an_operator_that_another_database_still_uses(admin, own_database):
    # The default operator holds grants in the tests' template database as well.
    _, engine = own_database
    migrate_with_operator(engine, command.upgrade, "head", OPERATOR_ROLE)
    migrate_with_operator(engine, command.downgrade, "0007", OPERATOR_ROLE)
    with engine.connect() as conn:
        assert not conn.scalar(
            sa.text("SELECT has_database_privilege(:r, current_database(), 'CONNECT')"),
            {"r": OPERATOR_ROLE},
        )
    kept = admin.execute(
        "SELECT pg_has_role(%(r)s, 'pg_signal_backend', 'MEMBER') FROM pg_roles "
        "WHERE rolname = %(r)s",
        {"r": OPERATOR_ROLE},
    ).fetchall()
    assert kept == [(True,)]


@pytest.mark.parametrize(
    "operator", [APP_ROLE, READER_ROLE, "app-operator; DROP ROLE x", "1operator"]
)
def test_0008_refuses_an_operator_that_is_another_login_or_not_a_plain_name(own_database, operator):
    _, engine = own_database
    migrate_with_operator(engine, command.upgrade, "0007", operator)
    with pytest.raises(ValueError, match="DB_IAM_OPERATOR_USER"):
        migrate_with_operator(engine, command.upgrade, "0008", operator)

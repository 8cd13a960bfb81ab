"""Proxy mode (DB_PROXY=true) through a stand-in for RDS Proxy (drills/proxy.py).

The stand-in refuses a login carrying startup options as RDS Proxy does, and
records every message clients send it. So these tests show, on the wire, that
the stand-in really refuses what the package sends to the cluster, that proxy
mode logs in, that its statement timeout still cancels a runaway statement, and
that nothing the API, the Lambda handlers or the reports send would pin a
session.
"""

from __future__ import annotations

import logging
import re
import secrets
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from psycopg import Connection
from sqlalchemy import exc as sa_exc

from api import create_app
from api.auth import Authenticator, AuthSettings
from dataaccess import Database, Settings, create_engine, reports, services
from drills.proxy import (
    MAX_UNPINNED_BYTES,
    OPTIONS_REFUSED,
    STARTUP_PARAMETERS,
    ProxyStandIn,
    pin_reason,
)
from scripts.devdb import APP_ROLE, local_settings
from scripts.invoke_local import LocalContext
from scripts.lambda_loader import load_fresh_handler, unload
from scripts.localauth import LocalIssuer
from tests.lambda_.helpers import lambda_env, load_event


@pytest.fixture
def stand_in(pg_cluster) -> Iterator[ProxyStandIn]:
    """The stand-in for RDS Proxy, in front of the test cluster."""
    with ProxyStandIn(pg_cluster.port, pg_cluster.host) as proxy:
        yield proxy


def via(proxy: ProxyStandIn, settings: Settings, user: str | None = None, **env: str) -> Settings:
    """Proxy-mode settings for `settings`' database, through the stand-in, as from DB_*."""
    assert settings.password is not None
    return local_settings(
        host="127.0.0.1",
        port=proxy.port,
        dbname=settings.name,
        user=user or settings.user or APP_ROLE,
        password=settings.password,
        DB_PROXY="true",
        **env,
    )


def test_a_login_with_startup_options_is_refused_as_rds_proxy_refuses_it(app_settings, stand_in):
    direct_mode = create_engine(replace(app_settings, port=stand_in.port), poolclass=sa.NullPool)
    with pytest.raises(sa_exc.OperationalError) as caught, direct_mode.connect():
        pass
    assert OPTIONS_REFUSED in str(caught.value)
    [session] = stand_in.sessions
    assert session.startup["options"] == f"-c statement_timeout={app_settings.statement_timeout_ms}"
    assert session.refused == OPTIONS_REFUSED


def test_proxy_mode_logs_in_with_documented_startup_parameters_only(app_settings, stand_in):
    db = Database.from_settings(via(stand_in, app_settings))
    try:
        with db.unit_of_work() as uow:
            assert uow.execute(sa.text("SELECT current_user")).scalar_one() == APP_ROLE
        db.ping()
    finally:
        db.dispose()
    assert stand_in.sessions
    for session in stand_in.sessions:
        assert session.refused is None
        assert set(session.startup) <= STARTUP_PARAMETERS, session.startup
        assert session.startup["application_name"] == app_settings.application_name


def test_a_runaway_statement_is_cancelled_by_the_role_default_through_the_proxy(
    admin: Connection, app_settings, login_role, stand_in
):
    # What migration 0007 does for the application's roles, with a timeout a test can wait for.
    admin.execute(f"ALTER ROLE \"{login_role}\" PASSWORD '{app_settings.password}'")
    admin.execute(f"ALTER ROLE \"{login_role}\" SET statement_timeout = '300ms'")
    settings = via(stand_in, app_settings, user=login_role, DB_STATEMENT_TIMEOUT_MS="300")
    engine = create_engine(settings)
    try:
        with engine.connect() as conn, pytest.raises(sa_exc.OperationalError) as caught:
            conn.execute(sa.text("SELECT pg_sleep(3)"))
        assert caught.value.orig.pgcode == "57014"  # query_canceled: the server's own timeout
        # The connection is still good for the next transaction.
        with engine.connect() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar_one() == "300ms"
    finally:
        engine.dispose()
    assert not any(pin_reason(statement) for statement in stand_in.statements())


def test_0007_gives_the_login_roles_the_timeout_and_the_migrating_user_none(
    admin: Connection, app_settings, stand_in, caplog
):
    rows = admin.execute(
        "SELECT r.rolname, s.setconfig FROM pg_db_role_setting AS s "
        "JOIN pg_roles AS r ON r.oid = s.setrole WHERE s.setdatabase = 0"
    ).fetchall()
    defaults = dict(rows)
    assert "statement_timeout=30000ms" in defaults[APP_ROLE]
    assert "statement_timeout=30000ms" in defaults["app_reader"]
    migrator = admin.execute("SELECT current_user").fetchone()[0]
    assert migrator not in defaults  # migrations keep DB_STATEMENT_TIMEOUT_MS=0

    caplog.set_level(logging.WARNING, logger="dataaccess.engine")
    proxied = create_engine(via(stand_in, app_settings))
    # A direct login's own value outranks the role's default.
    direct = create_engine(replace(app_settings, statement_timeout_ms=1234))
    try:
        with proxied.connect() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar_one() == "30s"
        with direct.connect() as conn:
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar_one() == "1234ms"
    finally:
        proxied.dispose()
        direct.dispose()
    assert not caplog.records  # the role's default is what DB_STATEMENT_TIMEOUT_MS says


def test_a_role_default_other_than_the_setting_is_reported_once(app_settings, stand_in, caplog):
    caplog.set_level(logging.WARNING, logger="dataaccess.engine")
    engine = create_engine(via(stand_in, app_settings, DB_STATEMENT_TIMEOUT_MS="5000"))
    try:
        with engine.connect(), engine.connect():  # two physical connections
            pass
    finally:
        engine.dispose()
    [record] = caplog.records
    assert "30000 ms" in record.getMessage()
    assert "DB_STATEMENT_TIMEOUT_MS=5000" in record.getMessage()


# -- nothing pins ---------------------------------------------------------------

# Every kind of statement the package (with psycopg2 and SQLAlchemy) is allowed to send.
# A new kind fails the audit below until someone has checked it against AWS's list.
ALLOWED_KINDS = frozenset(
    {"BEGIN", "BEGIN READ ONLY", "COMMIT", "ROLLBACK", "SELECT", "WITH", "INSERT", "UPDATE", "SHOW"}
)


def kind(statement: str) -> str:
    words = statement.split()
    if words[:3] == ["BEGIN", "READ", "ONLY"]:
        return "BEGIN READ ONLY"
    return words[0].upper() if words else ""


def admin_client(db: Database, tmp_path) -> FlaskClient:
    """A test client of the API on `db`, sending an admin's bearer token."""
    issuer = LocalIssuer(tmp_path / "issuer")
    app = create_app(
        {
            "TESTING": True,
            "DATABASE": db,
            "AUTHENTICATOR": Authenticator(AuthSettings.from_env(issuer.env())),
        }
    )
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {issuer.token(admin=True)}"
    return client


def test_nothing_the_package_sends_through_the_proxy_would_pin(
    app_settings, stand_in, tmp_path, monkeypatch
):
    """Run the API's, the Lambda handlers' and the reports' paths in proxy mode, then
    classify every statement the stand-in received.

    The stand-in records at the proxy's own vantage point, the socket: the
    startup packet and every message of every session, so also what no
    client-side hook sees (psycopg2's BEGIN, ROLLBACK and the SETs its
    autocommit switches can send, SQLAlchemy's first-connect queries, the
    pre-ping). A hook such as before_cursor_execute sees only SQLAlchemy's own
    statements; server-side logging (log_statement=all) would see the
    statements too, but not the startup packet, and only by parsing the
    server's log. Pre-pinging on every checkout (DB_POOL_PRE_PING_IDLE=0) and
    a reader endpoint ("localhost", the same stand-in) run every path the pool has.
    """
    proxied = via(stand_in, app_settings, DB_READER_HOST="localhost", DB_POOL_PRE_PING_IDLE="0")
    db = Database.from_settings(proxied)
    client = admin_client(db, tmp_path)
    try:
        _exercise_the_api(client)
        with db.unit_of_work(read_only=True) as uow:
            assert reports.low_stock(uow, threshold=1000)
        _exercise_the_lambda_handlers(proxied, monkeypatch)
    finally:
        db.dispose()

    sessions = stand_in.sessions
    statements = stand_in.statements()
    assert len(sessions) >= 4  # API writer and reader, Lambda writer and reader
    for session in sessions:
        assert session.refused is None
        assert set(session.startup) <= STARTUP_PARAMETERS, session.startup
        assert session.parsed == []  # no extended query protocol
        assert session.other == []  # simple queries only: no COPY, no fast-path calls
    pins = [(reason, statement[:200]) for s in sessions for reason, statement in s.pins()]
    assert pins == []
    kinds = Counter(kind(statement) for statement in statements)
    assert set(kinds) <= ALLOWED_KINDS, kinds
    assert max(len(statement.encode()) for statement in statements) < MAX_UNPINNED_BYTES
    # The transaction-scoped state the package does use ran, and ended with its transaction.
    assert kinds["BEGIN READ ONLY"] > 0
    assert any("pg_advisory_xact_lock" in statement for statement in statements)


def test_an_api_get_sends_one_select_and_nothing_around_it(app_settings, stand_in, tmp_path):
    """A GET's unit of work is autocommit: no BEGIN READ ONLY before its SELECT, no
    ROLLBACK after; a write keeps its transaction."""
    # No pre-ping, however slow the machine: it would be a SELECT 1 of its own.
    db = Database.from_settings(via(stand_in, app_settings, DB_POOL_PRE_PING_IDLE="3600"))
    client = admin_client(db, tmp_path)

    def sent_by(request) -> list[str]:
        """The kinds of statement `request()` sent, in order (one request: one session)."""
        seen = [len(session.statements) for session in stand_in.sessions]
        request()
        sessions = stand_in.sessions
        seen += [0] * (len(sessions) - len(seen))
        new = [s.statements[n:] for s, n in zip(sessions, seen, strict=True) if s.statements[n:]]
        assert len(new) == 1, new
        return [kind(statement) for statement in new[0]]

    sku = f"PX-{secrets.token_hex(3)}"
    product = {"sku": sku, "name": "One", "price_cents": 250, "stock": 5}
    try:
        assert client.get("/readyz").status_code == 200  # the engine's first connect
        written = sent_by(lambda: client.post("/products", json=product))
        assert written[0] == "BEGIN", written
        assert written[-1] == "COMMIT", written
        read = sent_by(lambda: client.get(f"/products/{sku}"))
        assert read == ["SELECT"]
        missing = sent_by(lambda: client.get("/products/PX-NONE"))
        assert missing == ["SELECT"]
    finally:
        db.dispose()


def _exercise_the_api(client) -> None:
    sku = f"PX-{secrets.token_hex(3)}"
    customer = client.post("/customers", json={"email": f"{sku}@example.com", "name": "Px"})
    assert customer.status_code == 201
    customer_id = customer.json["id"]
    product = {"sku": sku, "name": "Proxy", "price_cents": 250, "stock": 5}
    assert client.post("/products", json=product).status_code == 201
    assert client.get(f"/customers/{customer_id}").status_code == 200
    assert client.get(f"/products/{sku}").status_code == 200
    assert client.patch(f"/products/{sku}", json={"name": "Renamed"}).status_code == 200
    first = client.get("/products?limit=1")
    assert first.status_code == 200
    assert client.get("/products?stock_below=10").status_code == 200
    order = {"customer_id": customer_id, "lines": [{"sku": sku, "quantity": 2}]}
    placed = client.post("/orders", json=order, headers={"Idempotency-Key": sku})
    assert placed.status_code == 201
    replayed = client.post("/orders", json=order, headers={"Idempotency-Key": sku})
    assert replayed.json["id"] == placed.json["id"]
    too_many = {"customer_id": customer_id, "lines": [{"sku": sku, "quantity": 99}]}
    assert client.post("/orders", json=too_many).status_code == 409
    assert client.get(f"/orders/{placed.json['id']}").status_code == 200
    assert client.post(f"/orders/{placed.json['id']}/cancel").status_code == 200
    assert client.get("/readyz").status_code == 200


def _exercise_the_lambda_handlers(proxied: Settings, monkeypatch) -> None:
    for key, value in lambda_env(proxied).items():
        monkeypatch.setenv(key, value)
    handler = load_fresh_handler()
    try:
        database = handler.get_database()
        for sku in ("SKU-RED", "SKU-BLUE"):
            with database.unit_of_work() as uow:
                services.create_product(uow, sku=sku, name=sku, price_cents=100, stock=5)
        response = handler.stock_events_handler(load_event("sqs_stock_events.json"), LocalContext())
        assert response["batchItemFailures"]  # the recorded batch has bad records
        assert handler.report_handler(load_event("report_direct.json"), LocalContext())
        assert handler.report_handler(load_event("schedule_report.json"), LocalContext())
    finally:
        unload(handler)


# -- the audit can fail -------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "SET statement_timeout = 1000",
        "SET LOCAL statement_timeout = 1000",
        "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
        "select 1; SET search_path TO x",
        "RESET ALL",
        "SELECT set_config('statement_timeout', '1000', true)",
        "PREPARE p AS SELECT 1",
        "EXECUTE p",
        "DISCARD ALL",
        "CREATE TEMP TABLE t (id int)",
        "CREATE TEMPORARY SEQUENCE s",
        'DECLARE "c" CURSOR WITHOUT HOLD FOR SELECT 1',
        "LISTEN events",
        "LOAD 'auto_explain'",
        "SELECT nextval('orders_id_seq')",
        "SELECT pg_advisory_lock(1)",
        "SELECT pg_try_advisory_lock_shared(1)",
        "SELECT pg_advisory_unlock_all()",
        "SELECT '" + "x" * MAX_UNPINNED_BYTES + "'",
    ],
)
def test_pin_reason_names_each_pinning_condition(statement):
    assert pin_reason(statement) is not None


@pytest.mark.parametrize(
    "statement",
    [
        "BEGIN READ ONLY",
        "SELECT pg_advisory_xact_lock(hashtextextended('k', 0))",
        "UPDATE products AS p SET stock = p.stock + 1",
        "show standard_conforming_strings",
        "WITH locked AS (SELECT 1) SELECT * FROM locked",
    ],
)
def test_pin_reason_passes_what_ends_with_its_transaction(statement):
    assert pin_reason(statement) is None


def test_the_stand_in_sees_what_the_driver_sends_outside_sqlalchemy(app_settings, stand_in):
    """A SET and an extended-protocol prepared statement (psycopg 3) show up as pins."""
    dsn = (
        f"host=127.0.0.1 port={stand_in.port} dbname={app_settings.name} "
        f"user={app_settings.user} password={app_settings.password} sslmode=disable"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET work_mem = '8MB'", prepare=False)
        conn.execute("SELECT %s::int", (1,), prepare=True)
    [session] = stand_in.sessions
    reasons = [reason for reason, _ in session.pins()]
    assert "a SET or RESET command" in reasons
    assert "the extended query protocol" in reasons
    assert re.search(r"SELECT \$1::int", " ".join(session.parsed))

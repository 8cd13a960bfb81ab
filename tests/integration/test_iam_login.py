"""RDS IAM logins end to end, checked the way RDS checks them (scripts/localiam).

test_iam_tokens.py proves that a minted token travels as the password. Here a
local stand-in for an RDS endpoint sits in front of the cluster. It takes a login
of an IAM role only with a SigV4 `rds-db:connect` token that verifies against its
access keys, for its host, port, user and region, within 15 minutes. Otherwise it
answers as RDS does: `PAM authentication failed for user "..."`.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import boto3
import psycopg2
import pytest
import sqlalchemy as sa
import time_machine

from dataaccess import Database, create_engine, services
from dataaccess.credentials import IamTokenProvider
from dataaccess.resilience import is_auth_failure, is_transient_connect_error, is_unavailable
from scripts.devdb import APP_ROLE
from scripts.localiam import OTHER_AWS_CREDENTIALS, IamKey, LocalIamEndpoint, cluster_tls
from scripts.localpg import free_port

REPO = Path(__file__).resolve().parents[2]
REGION = "eu-west-1"
READER_ROLE = "app_reader"  # migration 0006's read-only IAM role


@pytest.fixture(autouse=True)
def local_aws_only(monkeypatch):
    """No AWS configuration of the machine's reaches boto3: only the keys made here."""
    for name in OTHER_AWS_CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    for name, value in IamKey.generate().env().items():  # a key no endpoint here trusts
        monkeypatch.setenv(name, value)


@pytest.fixture
def key():
    return IamKey.generate()


@pytest.fixture
def open_endpoint(pg_cluster, app_settings, key):
    """Start a stand-in RDS endpoint in front of the test cluster; keyword arguments override."""
    opened = []

    def open_(**overrides):
        options = {
            "upstream": (pg_cluster.host, pg_cluster.port),
            "logins": {APP_ROLE: app_settings.password},
            "keys": [key],
            "region": REGION,
            "tls": cluster_tls(pg_cluster.ca_file),
            **overrides,
        }
        endpoint = LocalIamEndpoint(**options).start()
        opened.append(endpoint)
        return endpoint

    yield open_
    for endpoint in opened:
        endpoint.close()


@pytest.fixture
def rds(open_endpoint):
    return open_endpoint()


def through(endpoint, app_settings, pg_cluster):
    """`app_settings` with DB_AUTH=iam through a stand-in endpoint, over verified TLS when
    the cluster has it (the endpoint presents the cluster's certificate)."""
    settings = replace(
        app_settings,
        host=endpoint.host,
        port=endpoint.port,
        auth="iam",
        password=None,
        region=REGION,
    )
    if pg_cluster.ca_file is not None:
        settings = replace(settings, sslmode="verify-full", sslrootcert=pg_cluster.ca_file)
    return settings


@pytest.fixture
def iam_settings(rds, app_settings, pg_cluster):
    return through(rds, app_settings, pg_cluster)


@pytest.fixture
def signing_key(monkeypatch, key):
    """The process's AWS credentials are `key`, as a task role's would be."""
    for name, value in key.env().items():
        monkeypatch.setenv(name, value)
    return key


def mint(key, *, host, port, user=APP_ROLE, region=REGION, at=None):
    """A token from botocore's own signer, signed with `key` (at epoch `at`, else now)."""
    session = boto3.session.Session(
        aws_access_key_id=key.access_key_id,
        aws_secret_access_key=key.secret_access_key,
        aws_session_token=key.session_token,
        region_name=region,
    )
    client = session.client("rds")
    if at is None:
        return client.generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user)
    with time_machine.travel(at, tick=False):
        return client.generate_db_auth_token(DBHostname=host, Port=port, DBUsername=user)


def connect(endpoint, pg_cluster, dbname, password, *, user=APP_ROLE, **params):
    """A psycopg2 connection through the endpoint, with verify-full when the cluster has TLS."""
    tls = {"sslmode": "verify-full", "sslrootcert": pg_cluster.ca_file}
    return psycopg2.connect(
        host=endpoint.host,
        port=endpoint.port,
        dbname=dbname,
        user=user,
        password=password,
        connect_timeout=10,
        **(tls if pg_cluster.ca_file else {"sslmode": "disable"}),
        **params,
    )


def logs_in(endpoint, pg_cluster, dbname, password, user=APP_ROLE):
    conn = connect(endpoint, pg_cluster, dbname, password, user=user)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user")
            return cur.fetchone()[0]
    finally:
        conn.close()


def test_the_package_logs_in_through_the_iam_check_and_works(
    rds, iam_settings, signing_key, pg_cluster
):
    db = Database.from_settings(iam_settings)  # its own provider and boto3 session
    try:
        with db.unit_of_work() as uow:
            created = services.create_customer(uow, email="iam@example.com", name="Iam Login")
        with db.unit_of_work(read_only=True) as uow:
            assert services.get_customer(uow, created.id).email == "iam@example.com"
            assert uow.session.scalar(sa.text("SELECT current_user")) == APP_ROLE
        with db.writer.connect() as conn:
            ssl_in_use = conn.connection.dbapi_connection.info.ssl_in_use
    finally:
        db.dispose()
    assert ssl_in_use is (pg_cluster.ca_file is not None)
    assert rds.accepted >= 1
    assert rds.refused == 0


@dataclass
class Case:
    endpoint: LocalIamEndpoint
    password: str
    reason: str
    user: str = APP_ROLE


def wrong_host(rds, key, cluster, open_endpoint, app_settings):
    token = mint(key, host="db.example.internal", port=rds.port)
    return Case(rds, token, f"signed for host db.example.internal:{rds.port}; this endpoint is")


def wrong_port(rds, key, cluster, open_endpoint, app_settings):
    # Signed for the server behind the endpoint, as a tunnel's client would sign it.
    token = mint(key, host=rds.host, port=cluster.port)
    return Case(rds, token, f"signed for host {rds.host}:{cluster.port}; this endpoint is")


def wrong_region(rds, key, cluster, open_endpoint, app_settings):
    token = mint(key, host=rds.host, port=rds.port, region="us-west-2")
    return Case(rds, token, f"signed for region us-west-2; this endpoint is in {REGION}")


def wrong_user(rds, key, cluster, open_endpoint, app_settings):
    token = mint(key, host=rds.host, port=rds.port, user=READER_ROLE)
    return Case(rds, token, f"token is for DBUser {READER_ROLE}; the login is for {APP_ROLE}")


def expired(rds, key, cluster, open_endpoint, app_settings):
    token = mint(key, host=rds.host, port=rds.port, at=time.time() - 16 * 60)
    return Case(rds, token, "token expired: signed at")


def clock_skew(rds, key, cluster, open_endpoint, app_settings):
    token = mint(key, host=rds.host, port=rds.port, at=time.time() + 10 * 60)
    return Case(rds, token, "ahead of this endpoint's clock (allowed: 300 s)")


def wrong_secret(rds, key, cluster, open_endpoint, app_settings):
    forged = replace(key, secret_access_key=IamKey.generate().secret_access_key)
    token = mint(forged, host=rds.host, port=rds.port)
    return Case(rds, token, "signature does not match")


def unknown_key(rds, key, cluster, open_endpoint, app_settings):
    token = mint(IamKey.generate(), host=rds.host, port=rds.port)
    return Case(rds, token, "unknown here")


def plain_password(rds, key, cluster, open_endpoint, app_settings):
    # The role's real password on the server: an rds_iam role cannot use one.
    return Case(rds, app_settings.password, "the password is not an RDS IAM token")


def no_session_token(rds, key, cluster, open_endpoint, app_settings):
    temporary = IamKey.generate(temporary=True)
    endpoint = open_endpoint(keys=[temporary])
    token = mint(replace(temporary, session_token=None), host=endpoint.host, port=endpoint.port)
    return Case(endpoint, token, "session token is not the one of access key")


def user_not_in_policy(rds, key, cluster, open_endpoint, app_settings):
    reader_only = IamKey.generate(db_users=frozenset({READER_ROLE}))
    endpoint = open_endpoint(keys=[reader_only])
    token = mint(reader_only, host=endpoint.host, port=endpoint.port)
    return Case(endpoint, token, f"may not rds-db:connect as {APP_ROLE}")


@pytest.mark.parametrize(
    "make_case",
    [
        wrong_host,
        wrong_port,
        wrong_region,
        wrong_user,
        expired,
        clock_skew,
        wrong_secret,
        unknown_key,
        plain_password,
        no_session_token,
        user_not_in_policy,
    ],
)
def test_a_token_not_valid_for_this_login_is_refused_as_rds_refuses_it(
    make_case, rds, key, pg_cluster, open_endpoint, app_settings, caplog
):
    caplog.set_level("INFO", logger="scripts.localiam")
    case = make_case(rds, key, pg_cluster, open_endpoint, app_settings)
    with pytest.raises(psycopg2.OperationalError) as refused:
        connect(case.endpoint, pg_cluster, app_settings.name, case.password, user=case.user)
    assert f'FATAL:  PAM authentication failed for user "{case.user}"' in str(refused.value)
    assert (case.endpoint.accepted, case.endpoint.refused) == (0, 1)
    # The developer is told why, and the log never holds the token.
    assert case.reason in caplog.text
    assert case.password not in caplog.text
    assert case.password.rpartition("X-Amz-Signature=")[2] not in caplog.text


@pytest.mark.parametrize(
    ("signed_ago", "accepted"),
    [
        pytest.param(0, True, id="just signed"),
        pytest.param(900, True, id="15 minutes old"),
        pytest.param(901, False, id="15 minutes and 1 s old"),
        pytest.param(-300, True, id="300 s ahead"),
        pytest.param(-301, False, id="301 s ahead"),
    ],
)
def test_a_token_is_good_for_15_minutes_and_5_minutes_of_skew(
    open_endpoint, key, pg_cluster, app_settings, signed_ago, accepted
):
    now = float(int(time.time()))
    rds = open_endpoint(clock=lambda: now)  # the endpoint's clock stands still
    token = mint(key, host=rds.host, port=rds.port, at=now - signed_ago)
    if accepted:
        assert logs_in(rds, pg_cluster, app_settings.name, token) == APP_ROLE
    else:
        with pytest.raises(psycopg2.OperationalError, match="PAM authentication failed"):
            logs_in(rds, pg_cluster, app_settings.name, token)
    assert (rds.accepted, rds.refused) == ((1, 0) if accepted else (0, 1))


def test_temporary_credentials_log_in_with_their_session_token(
    open_endpoint, pg_cluster, app_settings
):
    temporary = IamKey.generate(temporary=True)
    rds = open_endpoint(keys=[temporary])
    token = mint(temporary, host=rds.host, port=rds.port)
    assert "X-Amz-Security-Token=" in token
    assert logs_in(rds, pg_cluster, app_settings.name, token) == APP_ROLE


def test_the_endpoint_name_is_not_case_sensitive(rds, key, pg_cluster, app_settings):
    token = mint(key, host=rds.host.upper(), port=rds.port)
    assert logs_in(rds, pg_cluster, app_settings.name, token) == APP_ROLE


def test_tls_is_required_before_any_password_is_asked_for(
    rds, key, pg_cluster, app_settings, caplog
):
    if pg_cluster.ca_file is None:
        pytest.skip("the local cluster runs without TLS (no openssl on this machine)")
    token = mint(key, host=rds.host, port=rds.port)
    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        psycopg2.connect(
            host=rds.host,
            port=rds.port,
            dbname=app_settings.name,
            user=APP_ROLE,
            password=token,
            sslmode="disable",
            connect_timeout=10,
        )
    # Refused at startup: the token was never read, let alone checked.
    assert (rds.accepted, rds.refused) == (0, 0)
    assert "TLS is required here" in caplog.text


def test_a_role_without_rds_iam_logs_in_with_its_own_password(rds, pg_cluster, app_settings):
    """As on RDS: the master user's password login goes to the server's own check."""
    dbname = app_settings.name
    assert logs_in(rds, pg_cluster, dbname, pg_cluster.password, user=pg_cluster.user) == (
        pg_cluster.user
    )
    with pytest.raises(psycopg2.OperationalError, match="password authentication failed"):
        logs_in(rds, pg_cluster, dbname, "not-the-password", user=pg_cluster.user)
    assert (rds.accepted, rds.refused) == (0, 0)


def psycopg_connect(endpoint, pg_cluster, dbname, password, **params):
    """A psycopg (3) connection through the endpoint, with verify-full when the cluster has TLS."""
    psycopg = pytest.importorskip("psycopg")
    tls = {"sslmode": "verify-full", "sslrootcert": pg_cluster.ca_file}
    return psycopg.connect(
        host=endpoint.host,
        port=endpoint.port,
        dbname=dbname,
        user=APP_ROLE,
        password=password,
        connect_timeout=10,
        **(tls if pg_cluster.ca_file else {"sslmode": "disable"}),
        **params,
    )


def test_a_cancel_request_reaches_the_server_behind_the_endpoint(
    rds, key, pg_cluster, app_settings, admin
):
    """psycopg 3's cancel_safe (TLS, then the CancelRequest). psycopg2's cancel() holds the
    GIL while it waits for the answer, which an endpoint in this very process cannot give."""
    psycopg = pytest.importorskip("psycopg")
    token = mint(key, host=rds.host, port=rds.port)
    conn = psycopg_connect(rds, pg_cluster, app_settings.name, token)
    pid = conn.info.backend_pid  # the server's, relayed in its BackendKeyData
    running = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND state = 'active'"

    def cancel_once_running() -> None:
        deadline = time.monotonic() + 30
        while admin.execute(running, (pid,)).fetchone() != (1,) and time.monotonic() < deadline:
            time.sleep(0.02)
        conn.cancel_safe(timeout=10)

    canceller = threading.Thread(target=cancel_once_running, daemon=True)
    canceller.start()
    try:
        with pytest.raises(psycopg.errors.QueryCanceled):
            conn.execute("SELECT pg_sleep(60)")
    finally:
        canceller.join(timeout=30)
        conn.close()


def test_a_newer_protocol_version_is_negotiated_down_to_3_0(rds, key, pg_cluster, app_settings):
    """libpq 18 asks for protocol 3.2 when told to; the endpoint speaks 3.0, and says so."""
    psycopg = pytest.importorskip("psycopg")
    if psycopg.pq.version() < 180000:
        pytest.skip("psycopg's libpq predates protocol 3.2")
    token = mint(key, host=rds.host, port=rds.port)
    with psycopg_connect(
        rds, pg_cluster, app_settings.name, token, max_protocol_version="3.2"
    ) as conn:
        assert conn.pgconn.full_protocol_version == 30000
        assert conn.execute("SELECT current_user").fetchone() == (APP_ROLE,)


def test_a_refused_fresh_token_fails_the_connect_at_once(
    open_endpoint, app_settings, pg_cluster, signing_key
):
    """The engine's answer to a refusal: one attempt, not retried as transient; the API
    maps it to a 503 (dataaccess.resilience.is_unavailable)."""
    rds = open_endpoint(region="us-east-1")  # the client signs for eu-west-1
    settings = replace(through(rds, app_settings, pg_cluster), connect_retry_budget=3)
    provider = IamTokenProvider(host=rds.host, port=rds.port, user=APP_ROLE, region=REGION)
    engine = create_engine(settings, credentials=provider, poolclass=sa.NullPool)
    with pytest.raises(sa.exc.OperationalError) as refused:
        engine.connect().close()
    engine.dispose()
    assert 'PAM authentication failed for user "app_iam"' in str(refused.value)
    assert is_auth_failure(refused.value.orig)
    assert not is_transient_connect_error(refused.value.orig)
    assert is_unavailable(refused.value)
    # A fresh token is not retried, within the 3 s budget or otherwise.
    assert (provider.minted, rds.refused) == (1, 1)


def test_an_expired_cached_token_is_replaced_once_by_the_engine(
    rds, iam_settings, signing_key, caplog
):
    """A cache that keeps tokens too long: RDS refuses the stale one, the engine mints anew."""
    provider = IamTokenProvider(
        host=rds.host, port=rds.port, user=APP_ROLE, region=REGION, lifetime=3600
    )
    engine = create_engine(iam_settings, credentials=provider, poolclass=sa.NullPool)
    start = float(int(time.time()))
    try:
        with time_machine.travel(start, tick=False) as clock:
            with engine.connect() as conn:
                assert conn.scalar(sa.text("SELECT current_user")) == APP_ROLE
            clock.move_to(start + 16 * 60)  # the cache still holds the first token
            with engine.connect() as conn:
                assert conn.scalar(sa.text("SELECT current_user")) == APP_ROLE
    finally:
        engine.dispose()
    assert provider.minted == 2
    assert (rds.accepted, rds.refused) == (2, 1)
    assert "token expired" in caplog.text


# -- make run with DB_AUTH=iam ------------------------------------------------


@pytest.fixture
def run_dir():
    """A cluster folder of its own, so this test never touches `make run`'s."""
    path = REPO / ".localpg" / f"iam-e2e-{os.getpid()}-{free_port()}"
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_make_run_with_db_auth_iam_serves_through_the_iam_check(run_dir):
    port = free_port()
    env = {**os.environ, "DB_AUTH": "iam"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "scripts.run_local", "--port", str(port), "--dir", str(run_dir)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    ready = threading.Event()

    def read_output() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "OpenAPI document:" in line:  # the banner's last line
                ready.set()

    reader = threading.Thread(target=read_output, daemon=True)
    reader.start()
    try:
        assert ready.wait(timeout=120), "".join(lines)
        (export,) = [x for x in lines if x.strip().startswith("export TOKEN=")]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/products",
            headers={"Authorization": f"Bearer {export.split('=', 1)[1].strip()}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            assert response.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        reader.join(timeout=10)
        proc.stdout.close()
    output = "".join(lines)
    assert proc.returncode == 0, output
    assert "Database login: RDS IAM tokens" in output
    assert "accepted IAM login for app_iam" in output
    assert "refused IAM login" not in output
    assert not (run_dir / "data" / "postmaster.pid").exists(), "the database was not stopped"

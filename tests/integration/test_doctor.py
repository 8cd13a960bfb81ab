"""`python -m dataaccess doctor` against the real local cluster and moto: every step passes
on the migrated database, and each fault is provoked for real and named.

No fault here is a mock: a name that does not resolve, a port nothing listens on,
a listener whose backlog is full (SYNs dropped, as by a security group), a peer
that accepts TCP and never speaks, a certificate from another CA or for another
name, a refused password, revoked or added grants, a stamped-back schema, a
writer posing as the reader, and AWS refusals decided by moto's IAM engine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import replace
from pathlib import Path

import boto3
import pytest
import requests
from alembic.script import ScriptDirectory
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from moto import mock_aws
from moto.server import ThreadedMotoServer

from dataaccess.doctor import EXIT_CODES, STEPS, Status, diagnose
from scripts.devdb import APP_ROLE, REPO, alembic_config
from scripts.localpg import LocalPostgres, free_port, tls_env, usable_root
from tests.conftest import APP_PASSWORD

REGION = "us-east-1"
# moto's account, and the access key it gives boto3 outside any policy.
ACCOUNT = "123456789012"


@pytest.fixture
def app_env(app_settings, pg_cluster):
    """The DB_* environment a deployed service has, pointed at this test's database."""
    settings = replace(app_settings, connect_timeout=2)  # libpq's floor: the slow faults wait
    if pg_cluster.ca_file is not None:
        settings = replace(settings, sslmode="verify-full", sslrootcert=pg_cluster.ca_file)
    return settings.to_env()


@pytest.fixture
def admin_env(app_env, pg_cluster):
    """The same as the migration task: the master (here: super) user, who may read the schema."""
    return {**app_env, "DB_USER": pg_cluster.user, "DB_PASSWORD": pg_cluster.password}


@pytest.fixture
def tls_on(pg_cluster):
    if pg_cluster.ca_file is None:
        pytest.skip("the local cluster runs without TLS (no openssl on this machine)")


def doctor(env, *secrets, **kwargs):
    """diagnose(env), asserting that no secret reaches its text or JSON."""
    report = diagnose(env, **kwargs)
    for shown in (report.render(), report.to_json()):
        for secret in (*secrets, env.get("DB_PASSWORD")):
            if secret:
                assert secret not in shown
        assert "X-Amz-Signature" not in shown
    return report


def failed_at(report, step):
    """The failed step's result, after checking it is `step`, its exit code and what did not run."""
    assert report.failed is not None, report.render()
    assert report.failed.step == step, report.render()
    assert report.exit_code == EXIT_CODES[step]
    assert report.not_run == STEPS[STEPS.index(step) + 1 :]
    return report.failed


# -- every step passes ---------------------------------------------------------------


def test_every_step_passes_for_the_migration_user(admin_env):
    report = doctor(admin_env)
    assert report.ok, report.render()
    statuses = {s.step: s.status for s in report.steps}
    assert statuses == dict.fromkeys(STEPS[:-1], Status.PASS) | {"reader": Status.SKIP}
    assert report.step("migrations").summary.startswith("at head ")
    assert (
        "app_iam and app_reader hold what the migrations grant" in report.step("privileges").summary
    )


def test_the_app_role_passes_and_may_not_compare_the_revision(app_env):
    report = doctor(app_env)
    assert report.ok, report.render()
    assert report.step("login").details["user"] == APP_ROLE
    migrations = report.step("migrations")
    assert migrations.status is Status.SKIP
    assert "cannot compare: app_iam may not read alembic_version" in migrations.summary


def test_the_cli_prints_one_line_per_step_and_json_and_exits_0(admin_env, pg_cluster):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DB_")} | admin_env
    command = [sys.executable, "-m", "dataaccess", "doctor"]
    text = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, check=False)
    assert text.returncode == 0, text.stdout + text.stderr
    lines = text.stdout.splitlines()
    assert [line.split()[:2] for line in lines[1:-1]] == [["ok", step] for step in STEPS[:-1]] + [
        ["skip", "reader"]
    ]
    assert lines[-1].startswith("all checks passed")
    as_json = subprocess.run(
        [*command, "--json"], env=env, cwd=REPO, capture_output=True, text=True, check=False
    )
    data = json.loads(as_json.stdout)
    assert (as_json.returncode, data["ok"], data["exit_code"]) == (0, True, 0)
    for output in (text.stdout, text.stderr, as_json.stdout, as_json.stderr):
        assert pg_cluster.password not in output


def test_the_cli_exits_with_the_failed_steps_code(app_env):
    env = {k: v for k, v in os.environ.items() if not k.startswith("DB_")}
    env |= app_env | {"DB_PORT": str(free_port())}
    result = subprocess.run(
        [sys.executable, "-m", "dataaccess", "doctor", "--json"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == EXIT_CODES["tcp"]
    assert json.loads(result.stdout)["failed_step"] == "tcp"


# -- the network ---------------------------------------------------------------------


def test_a_name_that_does_not_resolve(app_env):
    verdict = failed_at(doctor(app_env | {"DB_HOST": "inventory.cluster-x.invalid"}), "dns")
    assert "DB_HOST=inventory.cluster-x.invalid does not resolve" in verdict.summary
    assert "describe-db-clusters" in verdict.fix


def test_a_port_nothing_listens_on(app_env):
    port = free_port()
    verdict = failed_at(doctor(app_env | {"DB_PORT": str(port)}), "tcp")
    assert f"127.0.0.1 refused port {port}: nothing listens there" in verdict.summary
    assert "DB_PORT" in verdict.fix


def test_a_dropped_syn_is_the_vpc_connection_error(app_env):
    # A listener whose accept queue is full drops every new SYN, as a security group
    # without the inbound rule does: the client hears nothing until its timeout.
    with socket.socket() as listener, contextlib.ExitStack() as held:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(8):
            client = held.enter_context(socket.socket())
            client.settimeout(0.5)
            try:
                client.connect(("127.0.0.1", port))
            except TimeoutError:
                break
        else:
            pytest.skip("this kernel queues SYNs past a full backlog")
        verdict = failed_at(doctor(app_env | {"DB_PORT": str(port)}), "tcp")
    assert f"no answer from 127.0.0.1:{port} within 2 s (VPC connection error)" in verdict.summary
    assert "security group" in verdict.fix
    assert "route" in verdict.fix


def test_a_peer_that_accepts_tcp_and_never_answers_tls(app_env):
    # The kernel completes the handshake for a listener that never accepts: TCP
    # works, and the SSLRequest waits for an answer that never comes.
    with socket.create_server(("127.0.0.1", 0), backlog=4) as silent:
        port = silent.getsockname()[1]
        env = app_env | {"DB_PORT": str(port), "DB_SSLMODE": "require"}
        verdict = failed_at(doctor(env | {"DB_ALLOW_INSECURE_TLS": "true"}), "tls")
    assert "accepted TCP but did not answer the TLS request within 2 s" in verdict.summary


def other_ca(path: Path) -> Path:
    """A self-signed CA that signed nothing the server has."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "not-the-server-ca")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return path


@pytest.mark.usefixtures("tls_on")
def test_a_ca_bundle_that_did_not_sign_the_server_certificate(app_env, tmp_path):
    bundle = other_ca(tmp_path / "other-ca.pem")
    verdict = failed_at(doctor(app_env | {"DB_SSLROOTCERT": str(bundle)}), "tls")
    assert verdict.summary.startswith("certificate verify failed")
    assert f"DB_SSLROOTCERT={bundle} does not hold the CA" in verdict.fix
    assert "issuer: CN=localpg" in verdict.fix  # read from the server's certificate


@contextlib.contextmanager
def relay(listen_host: str, port: int, target_port: int):
    """A TCP relay from listen_host:port to 127.0.0.1:target_port: another address, same server."""
    sockets: list[socket.socket] = []
    stop = threading.Event()
    server = socket.create_server((listen_host, port))
    server.settimeout(0.1)

    def pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(("127.0.0.1", target_port))
            sockets.extend((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=pump, args=(source, sink), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield
    finally:
        stop.set()
        acceptor.join()
        server.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


@pytest.mark.usefixtures("tls_on")
def test_an_address_the_certificate_does_not_name(app_env, pg_cluster):
    # The server's certificate names 127.0.0.1 and localhost (scripts/localpg.py).
    with relay("127.0.0.2", pg_cluster.port, pg_cluster.port):
        verdict = failed_at(doctor(app_env | {"DB_HOST": "127.0.0.2"}), "tls")
    assert "IP address mismatch" in verdict.summary
    assert "Connect by a name the certificate lists (127.0.0.1, localhost)" in verdict.fix


# -- credentials and the login -------------------------------------------------------


def test_a_wrong_password(app_env):
    wrong = "not-" + APP_PASSWORD
    verdict = failed_at(doctor(app_env | {"DB_PASSWORD": wrong}, APP_PASSWORD), "login")
    assert "the server refused DB_PASSWORD for app_iam" in verdict.summary
    assert "DB_PASSWORD is not app_iam's password" in verdict.fix


def test_a_role_that_cannot_log_in(app_env, admin, login_role):
    admin.execute(f"ALTER ROLE \"{login_role}\" NOLOGIN PASSWORD '{APP_PASSWORD}'")
    verdict = failed_at(doctor(app_env | {"DB_USER": login_role}), "login")
    assert "has NOLOGIN" in verdict.summary
    assert f"ALTER ROLE {login_role} LOGIN" in verdict.fix


@pytest.fixture
def no_aws_credentials(monkeypatch, tmp_path):
    """An environment with no AWS credentials anywhere: no variables, empty files, no IMDS."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    empty = tmp_path / "empty"
    empty.write_text("")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.mark.usefixtures("no_aws_credentials")
def test_iam_without_any_aws_credentials(app_env):
    env = app_env | {"DB_AUTH": "iam", "DB_REGION": REGION}
    verdict = failed_at(doctor(env), "credential")
    assert verdict.summary == "no AWS credentials found to sign the IAM token with"
    assert "task role" in verdict.fix
    assert "Lambda execution role" in verdict.fix


@pytest.mark.usefixtures("no_aws_credentials")
def test_a_token_signed_for_another_host_is_refused_and_named(app_env):
    with mock_aws():
        cluster = boto3.client("rds", region_name=REGION).create_db_cluster(
            DBClusterIdentifier="inventory",
            Engine="aurora-postgresql",
            MasterUsername="master",
            MasterUserPassword="not-used-1234",
            EnableIAMDatabaseAuthentication=True,
        )["DBCluster"]
        endpoint = cluster["Endpoint"]
        env = app_env | {"DB_AUTH": "iam", "DB_REGION": REGION, "DB_IAM_HOST": endpoint}
        del env["DB_PASSWORD"]
        report = doctor(env)
    credential = report.step("credential")
    assert credential.status is Status.WARN
    assert f"signed for {endpoint}:" in credential.summary
    verdict = failed_at(report, "login")
    assert "the server refused the IAM token for app_iam" in verdict.summary
    assert any(
        f"tokens are signed for DB_IAM_HOST={endpoint} but the connection goes to "
        "DB_HOST=127.0.0.1" in note
        for note in verdict.notes
    )
    arn = f"arn:aws:rds-db:{REGION}:{ACCOUNT}:dbuser:{cluster['DbClusterResourceId']}/app_iam"
    assert f"Allow rds-db:connect on {arn}" in verdict.fix


# -- Secrets Manager, with IAM enforced by moto --------------------------------------


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def kms_checked_by_secrets_manager(monkeypatch):
    """Secrets Manager decrypts a secret with its KMS key as the caller; moto does not.

    Teach moto AWS's rule, decided by moto's own IAM engine: GetSecretValue also
    needs kms:Decrypt on the secret's key, and without it AWS answers
    AccessDeniedException "Access to KMS is not allowed".
    """
    from moto import settings as moto_settings
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.exceptions import AccessDeniedError, JsonRESTError
    from moto.iam.access_control import IAMRequest
    from moto.secretsmanager.responses import SecretsManagerResponse

    read = SecretsManagerResponse.get_secret_value

    def get_secret_value(self):
        if ActionAuthenticatorMixin.request_count >= moto_settings.INITIAL_NO_AUTH_ACTION_COUNT:
            secret = self.backend.describe_secret(self._get_param("SecretId"))
            request = IAMRequest(
                account_id=self.current_account,
                method=self.method,
                path=self.raw_path,
                data=self.data,
                body=self.raw_body,
                headers=self.headers,
                action="Decrypt",
            )
            request._action = "kms:Decrypt"
            try:
                request.check_action_permitted(secret.kms_key_id)
            except AccessDeniedError:
                raise JsonRESTError(
                    "AccessDeniedException", "Access to KMS is not allowed"
                ) from None
        return read(self)

    monkeypatch.setattr(SecretsManagerResponse, "get_secret_value", get_secret_value)


@pytest.fixture
def aws_as(moto_url, monkeypatch, no_aws_credentials):
    """aws_as(actions): the master secret (app_iam's login) and a principal allowed `actions`.

    Set up as moto's root, then IAM is enforced for every request; returns
    (secret name, secret ARN, KMS key ARN, principal ARN).
    """
    reset = f"{moto_url}/moto-api/reset-auth"
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)

    def setup(actions):
        requests.post(reset, data=b"inf", timeout=5)
        admin = boto3.session.Session(
            aws_access_key_id="admin", aws_secret_access_key="admin", region_name=REGION
        )
        suffix = os.urandom(4).hex()
        key = admin.client("kms").create_key()["KeyMetadata"]["Arn"]
        name = f"db/master-{suffix}"
        secret = json.dumps({"username": APP_ROLE, "password": APP_PASSWORD, "engine": "postgres"})
        arn = admin.client("secretsmanager").create_secret(
            Name=name, SecretString=secret, KmsKeyId=key
        )["ARN"]
        iam = admin.client("iam")
        user = f"doctor-{suffix}"
        principal = iam.create_user(UserName=user)["User"]["Arn"]
        statement = {"Effect": "Allow", "Action": actions, "Resource": "*"}
        iam.put_user_policy(
            UserName=user,
            PolicyName="doctor",
            PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [statement]}),
        )
        access = iam.create_access_key(UserName=user)["AccessKey"]
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", access["AccessKeyId"])
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", access["SecretAccessKey"])
        requests.post(reset, data=b"0", timeout=5)  # every request from here is authorised
        return name, arn, key, principal

    yield setup
    requests.post(reset, data=b"inf", timeout=5)


def secret_env(app_env, name):
    env = app_env | {"DB_AUTH": "secret", "DB_SECRET_ID": name, "DB_REGION": REGION}
    del env["DB_PASSWORD"], env["DB_USER"]
    return env


@pytest.mark.usefixtures("kms_checked_by_secrets_manager")
def test_secret_mode_reads_the_secret_and_logs_in(app_env, aws_as):
    name, *_ = aws_as(["secretsmanager:GetSecretValue", "kms:Decrypt"])
    report = doctor(secret_env(app_env, name), APP_PASSWORD)
    assert report.ok, report.render()
    assert report.step("credential").summary == (
        f"secret {name} read from Secrets Manager: user {APP_ROLE}"
    )
    assert report.step("login").details["user"] == APP_ROLE


@pytest.mark.usefixtures("kms_checked_by_secrets_manager")
def test_secrets_manager_access_denied_names_the_action_and_the_secret(app_env, aws_as):
    name, arn, _, principal = aws_as(["secretsmanager:DescribeSecret", "kms:Decrypt"])
    verdict = failed_at(doctor(secret_env(app_env, name), APP_PASSWORD), "credential")
    assert verdict.summary == f"{principal} may not secretsmanager:GetSecretValue on {arn}"
    assert verdict.fix.startswith(
        f"Allow secretsmanager:GetSecretValue on {arn} in the IAM policy of {principal}"
    )


@pytest.mark.usefixtures("kms_checked_by_secrets_manager")
def test_kms_decrypt_denied_names_the_key(app_env, aws_as):
    name, arn, key, principal = aws_as(
        ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"]
    )
    verdict = failed_at(doctor(secret_env(app_env, name), APP_PASSWORD), "credential")
    assert f"Secrets Manager could not decrypt {arn} for {principal}: KMS decrypt denied" in (
        verdict.summary
    )
    assert verdict.fix.startswith(f"Allow kms:Decrypt on {key} for {principal}")


# -- the schema and the grants -------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "finding", "statement"),
    [
        (
            "REVOKE INSERT ON orders FROM app_iam",
            "app_iam lacks INSERT on orders",
            "GRANT INSERT ON orders TO app_iam",
        ),
        (
            "REVOKE UPDATE (stock) ON products FROM app_iam",
            "app_iam lacks UPDATE on products (stock)",
            "GRANT UPDATE (stock) ON products TO app_iam",
        ),
        (
            "GRANT DELETE ON stock_events TO app_iam",
            "app_iam holds DELETE on stock_events, which it must not",
            "REVOKE DELETE ON stock_events FROM app_iam",
        ),
        (
            "GRANT SELECT ON customers TO app_reader",
            "app_reader holds SELECT on customers, which it must not",
            "REVOKE SELECT ON customers FROM app_reader",
        ),
        (
            "GRANT UPDATE ON SEQUENCE orders_id_seq TO app_iam",
            "app_iam holds UPDATE on sequence orders_id_seq, which it must not",
            "REVOKE UPDATE ON SEQUENCE orders_id_seq FROM app_iam",
        ),
        (
            "GRANT SELECT ON alembic_version TO app_iam",
            "app_iam holds SELECT on alembic_version, which it must not",
            "REVOKE SELECT ON alembic_version FROM app_iam",
        ),
        (  # the fix names the table as a statement must, quoted
            'CREATE TABLE "Scratch" (id int); GRANT SELECT ON "Scratch" TO app_iam',
            "app_iam holds SELECT on Scratch, which it must not",
            'REVOKE SELECT ON "Scratch" FROM app_iam',
        ),
    ],
)
def test_a_grant_that_differs_from_the_migrations(admin_env, admin, change, finding, statement):
    admin.execute(change)
    verdict = failed_at(doctor(admin_env), "privileges")
    assert verdict.summary.startswith(finding), verdict.summary
    assert verdict.fix.endswith(f"as the master user, {statement}")


def test_a_database_behind_head(admin_env, admin):
    scripts = ScriptDirectory.from_config(alembic_config())
    (head,) = scripts.get_heads()
    previous = scripts.get_revision(head).down_revision
    admin.execute("UPDATE alembic_version SET version_num = %s", [previous])  # a stamp
    verdict = failed_at(doctor(admin_env), "migrations")
    assert verdict.summary.startswith(
        f"the database is at {previous}, 1 revision(s) behind head {head} (pending: {head})"
    )
    assert "alembic upgrade head" in verdict.fix


def test_without_the_migration_scripts_the_revision_is_reported_not_compared(admin_env, tmp_path):
    report = doctor(admin_env, alembic_ini=tmp_path / "nowhere" / "alembic.ini")
    assert report.ok, report.render()
    migrations = report.step("migrations")
    assert migrations.status is Status.SKIP
    assert "cannot compare: no alembic.ini here" in migrations.summary
    assert migrations.summary.startswith("the database is at 0")


def test_a_database_that_was_never_migrated(admin_env, admin):
    name = f"empty_{os.urandom(4).hex()}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        verdict = failed_at(doctor(admin_env | {"DB_NAME": name}), "migrations")
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    assert "no alembic_version table" in verdict.summary


# -- the reader endpoint -------------------------------------------------------------


def test_a_reader_host_that_is_the_writer(app_env):
    # "localhost" is the same server under another name (and in its certificate).
    verdict = failed_at(doctor(app_env | {"DB_READER_HOST": "localhost"}), "reader")
    assert "DB_READER_HOST=localhost answers as a writer" in verdict.summary
    assert "reader endpoint" in verdict.fix


@pytest.fixture
def hot_standby(pg_cluster, postgresql, tmp_path):
    """A streaming replica of the test cluster on 127.0.0.3, same port: a real reader."""
    root = usable_root(tmp_path / "standby")
    standby = LocalPostgres(root, pg_cluster.port, extra_options="-c listen_addresses=127.0.0.3")
    try:
        standby.clone_from(pg_cluster).start()  # pg_cluster has LocalPostgres's fields
        yield "127.0.0.3"
    finally:
        standby.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_a_hot_standby_answers_as_the_reader(app_env, hot_standby):
    # Without TLS: the standby's own certificate names neither 127.0.0.3 nor the CA.
    env = app_env | tls_env(None) | {"DB_READER_HOST": hot_standby}
    env.pop("DB_SSLROOTCERT", None)
    report = doctor(env)
    assert report.ok, report.render()
    reader = report.step("reader")
    assert reader.status is Status.PASS
    assert reader.summary.startswith("DB_READER_HOST=127.0.0.3 answers read-only")
    assert reader.details["in_recovery"] is True

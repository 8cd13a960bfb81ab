"""D5 and D6: credentials that expire or rotate while traffic keeps logging in."""

from __future__ import annotations

import json
import re
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
import sqlalchemy as sa
from moto.server import ThreadedMotoServer

from dataaccess import Database, Settings, create_engine
from dataaccess.credentials import IAM_TOKEN_LIFETIME, IamTokenProvider, SecretsManagerProvider
from drills.load import ApiLoad, LambdaLoad
from drills.outages import Pace, lambda_handler
from drills.result import DrillResult
from drills.stage import Stage, customer_id
from scripts.devdb import APP_ROLE, set_password
from scripts.lambda_loader import unload
from scripts.localpg import free_port

REGION = "eu-west-1"
# Offline signing keys: RDS never sees these tokens, our stand-in below does.
# What dataaccess.engine logs for each refused login (cached, then fresh).
_REFUSED = re.compile("login refused with a cached credential|password authentication failed")
FAKE_KEYS = {"aws_access_key_id": "AKIADRILL", "aws_secret_access_key": "drill-signing-key"}


def _login_role(st: Stage, prefix: str) -> str:
    name = f"{prefix}_{secrets.token_hex(3)}"
    with st.admin() as conn, conn.cursor() as cur:
        cur.execute(f'CREATE ROLE "{name}" LOGIN IN ROLE {APP_ROLE}')
    return name


class _AcceptingRds:
    """RDS's token check, played by the server: each minted token becomes the role's password.

    Real RDS accepts any unexpired token; PostgreSQL keeps one password per role,
    so the drill lets logins race a mint only within a window, never across one.
    """

    def __init__(self, st: Stage, admin: Settings, role: str) -> None:
        self._client = boto3.client("rds", region_name=REGION, **FAKE_KEYS)
        self._st, self._admin, self._role = st, admin, role

    def generate_db_auth_token(self, **kwargs: Any) -> str:
        token = str(self._client.generate_db_auth_token(**kwargs))
        self._st.secrets.add(token)
        set_password(self._admin, self._role, token)
        return token


class _Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def d5_token_expiry(st: Stage, pace: Pace) -> DrillResult:
    result = DrillResult(
        "D5",
        "token expiry under load",
        "threads opening new IAM-token connections",
        "clock moved across 3 token lifetimes; the signing credentials expire once before a token",
    )
    role = _login_role(st, "drill_iam")
    admin = st.admin_settings()
    clock = _Clock()
    start = clock.now
    # The first signing credentials expire 2,000 s in, mid-token; the next ones outlive the drill.
    expiry = [start + 2000]

    def signer_expiry() -> float:
        if clock.now >= expiry[0] - 60:
            expiry[0] = start + 10 * IAM_TOKEN_LIFETIME  # botocore refreshed them
        return expiry[0]

    settings = Settings.from_env(st.app_env(DB_AUTH="iam", DB_USER=role, DB_REGION=REGION))
    provider = IamTokenProvider(
        host=settings.host,
        port=settings.port,
        user=role,
        region=REGION,
        client=_AcceptingRds(st, admin, role),  # type: ignore[arg-type]
        credential_expiry=signer_expiry,
        clock=clock,
    )
    engine = create_engine(settings, credentials=provider, poolclass=sa.NullPool)
    threads, per_thread = (16, 3) if pace.settle > 2 else (8, 2)
    logins, failures = 0, []
    lock = threading.Lock()

    def login() -> None:
        nonlocal logins
        for _ in range(per_thread):
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT 1"))
                with lock:
                    logins += 1
            except Exception as exc:  # counted, not raised: the figure is the point
                with lock:
                    failures.append(type(exc).__name__)

    # Every 100 s of token time, a burst of concurrent logins; 3 lifetimes in all.
    for step in range(0, 3 * IAM_TOKEN_LIFETIME + 1, 100):
        clock.now = start + step
        workers = [threading.Thread(target=login) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    engine.dispose()
    # Mints at 0, 900 and 1800 s (one per 15-minute window the 45 minutes touch),
    # and at 2000 s, when the signer of the 1800 s token is a minute from expiry.
    expected = 3 + 1
    result.requests = logins + len(failures)
    result.refused = len(failures)
    result.checks["0 failed logins"] = not failures
    result.checks[f"tokens minted = windows crossed + 1 credential expiry ({expected})"] = (
        provider.minted == expected
    )
    result.notes.append(f"{logins} logins from {threads} threads, {provider.minted} tokens minted")
    return result


@contextmanager
def _secrets_manager() -> Iterator[str]:
    """A local Secrets Manager (moto's server) for processes that cannot share a mock."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def d6_secret_rotation(st: Stage, pace: Pace) -> DrillResult:
    result = DrillResult(
        "D6",
        "secret rotation during traffic",
        "API and Lambda in secret mode, connections recycled every second",
        "password changed on the server, the secret updated 2 s later",
    )
    role = _login_role(st, "drill_secret")
    admin = st.admin_settings()
    old, new = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
    st.secrets.update({old, new})
    set_password(admin, role, old)
    with _secrets_manager() as endpoint:
        client = boto3.client(
            "secretsmanager", region_name=REGION, endpoint_url=endpoint, **FAKE_KEYS
        )
        body = {"username": role, "password": old, "engine": "postgres"}
        arn = client.create_secret(Name=f"drill/{role}", SecretString=json.dumps(body))["ARN"]
        env = {
            "DB_AUTH": "secret",
            "DB_SECRET_ID": arn,
            "DB_REGION": REGION,
            "DB_POOL_RECYCLE": "1",  # every connection older than 1 s logs in again
            "AWS_ENDPOINT_URL_SECRETS_MANAGER": endpoint,
            "AWS_ACCESS_KEY_ID": FAKE_KEYS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": FAKE_KEYS["aws_secret_access_key"],
        }
        handler = lambda_handler(st)
        settings = Settings.from_env({**st.app_env(**env), "AWS_LAMBDA_FUNCTION_NAME": "drill"})
        provider = SecretsManagerProvider(secret_id=arn, region=REGION, client=client)
        handler.set_database(Database.from_settings(settings, credentials=provider))
        with st.api(**env) as base:
            api = ApiLoad(base, customer_id(st), st.admin_token).start()
            lam = LambdaLoad(handler).start()
            try:
                time.sleep(pace.warmup + 1)
                set_password(admin, role, new)  # setSecret: the server first
                time.sleep(2)
                client.put_secret_value(  # finishSecret: AWSCURRENT names it 2 s later
                    SecretId=arn, SecretString=json.dumps({**body, "password": new})
                )
                time.sleep(pace.settle + 2)
            finally:
                api.stop()
                lam.stop()
        unload(handler)
    refused = sum(len(_REFUSED.findall(p.read_text())) for p in st.logs)
    failed = api.failures()
    result.requests = len(api.replies) + lam.invocations
    result.refused = len(failed) + lam.failed_invocations
    result.checks["0 failed requests"] = not failed and lam.failed_invocations == 0
    result.checks["the rotation was exercised: logins were refused, then got in"] = refused > 0
    result.checks["0 crashes"] = not lam.crashes
    result.notes.append(
        f"{refused} refused logins (each re-read the secret); {provider.fetches} Lambda reads"
    )
    return result

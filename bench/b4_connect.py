"""B4: open new physical connections with an IAM token (cached) vs a static password."""

from __future__ import annotations

import datetime as dt
import secrets

import boto3
import psycopg2
import sqlalchemy as sa
import time_machine
from moto import mock_aws

from dataaccess import create_engine
from dataaccess.credentials import IamTokenProvider

from .harness import BenchDB, Row, Sizes, alternate, median, timed

IAM_ROLE = "bench_iam"
STATIC_ROLE = "bench_static"
REGION = "eu-west-1"
# Time stands still while tokens are signed, so the token the provider mints is
# exactly the one set as the role's password: the server really accepts it.
FROZEN = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)


def _login_role(bdb: BenchDB, role: str, password: str) -> None:
    conn = bdb.admin_connect()
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(f"SELECT 1 FROM pg_roles WHERE rolname = '{role}'")
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(f'{verb} ROLE "{role}" LOGIN PASSWORD %s', (password,))
    finally:
        conn.close()


def run(bdb: BenchDB, sizes: Sizes) -> Row:
    static_password = secrets.token_urlsafe(16)
    with mock_aws(), time_machine.travel(FROZEN, tick=False):
        rds = boto3.client("rds", region_name=REGION)
        token = rds.generate_db_auth_token(
            DBHostname=bdb.host, Port=bdb.port, DBUsername=IAM_ROLE, Region=REGION
        )
        _login_role(bdb, IAM_ROLE, token)
        _login_role(bdb, STATIC_ROLE, static_password)
        settings = bdb.app_settings(DB_USER=IAM_ROLE)
        provider = IamTokenProvider(
            host=bdb.host, port=bdb.port, user=IAM_ROLE, region=REGION, client=rds
        )
        engine = create_engine(settings, credentials=provider, poolclass=sa.NullPool)
        base_args = {
            "host": bdb.host,
            "port": bdb.port,
            "dbname": bdb.name,
            "user": STATIC_ROLE,
            "password": static_password,
            # What create_engine passes, so both logins carry the same options.
            "sslmode": settings.sslmode,
            "connect_timeout": settings.connect_timeout,
            "application_name": settings.application_name,
            "options": f"-c statement_timeout={settings.statement_timeout_ms}",
        }

        def ours_op(_: int) -> None:
            with engine.connect():
                pass

        def base_op(_: int) -> None:
            psycopg2.connect(**base_args).close()

        try:
            ours, base = alternate(
                lambda n: timed(ours_op, n),
                lambda n: timed(base_op, n),
                total=sizes.connects,
                rounds=sizes.rounds,
            )
        finally:
            engine.dispose()
    opened = len(ours)
    return Row(
        key="B4",
        workload=f"open {sizes.connects:,} new physical connections",
        ours=median(ours) * 1e3,
        baseline=median(base) * 1e3,
        unit="ms per connection, median",
        goal="time ratio ≤ 1.05; tokens minted = 1",
        better="lower",
        limit=1.05,
        notes=[
            f"ours: `create_engine(settings, credentials=IamTokenProvider(...), "
            f"poolclass=NullPool)`, `engine.connect()` + close: {opened:,} logins (warm-up "
            f"included) with a token signed by boto3 under moto; tokens minted: "
            f"{provider.minted}.",
            "baseline: `psycopg2.connect(...)` + close with a static password and the same "
            "connect options. Both roles use SCRAM-SHA-256, so the server does the same work.",
        ],
        extra={"minted": provider.minted},
    )

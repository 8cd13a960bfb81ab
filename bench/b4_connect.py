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
from dataaccess.credentials import IamTokenProvider, StaticPasswordProvider

from .harness import BenchDB, Row, Sizes, alternate, median, timed

IAM_ROLE = "bench_iam"
STATIC_ROLE = "bench_static"
SHORT_ROLE = "bench_short"
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
            # Migration 0005 takes CONNECT from PUBLIC: a login role needs its own.
            cur.execute(f'GRANT CONNECT ON DATABASE "{bdb.name}" TO "{role}"')
    finally:
        conn.close()


def run(bdb: BenchDB, sizes: Sizes) -> Row:
    with mock_aws(), time_machine.travel(FROZEN, tick=False):
        rds = boto3.client("rds", region_name=REGION)
        token = rds.generate_db_auth_token(
            DBHostname=bdb.host, Port=bdb.port, DBUsername=IAM_ROLE, Region=REGION
        )
        # SCRAM's PBKDF2 re-keys HMAC with the password 4,096 times, and a key
        # longer than a hash block is hashed each time: a token of several hundred
        # characters costs libpq measurably more than a short password. That is the login
        # method's cost, not the provider's, so the baseline's static password
        # has the token's length; the short-password cost is measured below.
        static_password = secrets.token_urlsafe(len(token))[: len(token)]
        short_password = secrets.token_urlsafe(16)
        _login_role(bdb, IAM_ROLE, token)
        _login_role(bdb, STATIC_ROLE, static_password)
        _login_role(bdb, SHORT_ROLE, short_password)
        settings = bdb.app_settings(DB_USER=IAM_ROLE)
        provider = IamTokenProvider(
            host=bdb.host, port=bdb.port, user=IAM_ROLE, region=REGION, client=rds
        )
        engine = create_engine(settings, credentials=provider, poolclass=sa.NullPool)
        # The baseline differs in one thing only: where the password comes from.
        static_engine = create_engine(
            bdb.app_settings(DB_USER=STATIC_ROLE),
            credentials=StaticPasswordProvider(STATIC_ROLE, static_password),
            poolclass=sa.NullPool,
        )
        base_args = {
            "host": bdb.host,
            "port": bdb.port,
            "dbname": bdb.name,
            "user": STATIC_ROLE,
            "password": static_password,
            # What create_engine passes, so both logins carry the same options.
            **bdb.tls_kwargs(),
            "connect_timeout": settings.connect_timeout,
            "application_name": settings.application_name,
            "options": f"-c statement_timeout={settings.statement_timeout_ms}",
        }

        def ours_op(_: int) -> None:
            with engine.connect():
                pass

        def base_op(_: int) -> None:
            with static_engine.connect():
                pass

        def raw_op(_: int) -> None:
            psycopg2.connect(**base_args).close()

        short_args = {**base_args, "user": SHORT_ROLE, "password": short_password}

        def short_op(_: int) -> None:
            psycopg2.connect(**short_args).close()

        try:
            ours, base = alternate(
                lambda n: timed(ours_op, n),
                lambda n: timed(base_op, n),
                total=sizes.connects,
                # Short rounds: a login's cost drifts with the machine's load by more
                # than the 5% this goal allows, so both sides sample it often.
                rounds=sizes.rounds * 4,
            )
            via_engine, raw = alternate(
                lambda n: timed(base_op, n),
                lambda n: timed(raw_op, n),
                total=max(sizes.connects // 4, 1),
                rounds=sizes.rounds,
            )
            long_, short = alternate(
                lambda n: timed(raw_op, n),
                lambda n: timed(short_op, n),
                total=max(sizes.connects // 4, 1),
                rounds=sizes.rounds,
            )
        finally:
            engine.dispose()
            static_engine.dispose()
    long_ms, short_ms = median(long_) * 1e3, median(short) * 1e3
    base_ms = median(base) * 1e3
    engine_ms, raw_ms = median(via_engine) * 1e3, median(raw) * 1e3
    opened = len(ours)
    return Row(
        key="B4",
        workload=f"open {sizes.connects:,} new physical connections",
        ours=median(ours) * 1e3,
        baseline=base_ms,
        unit="ms per connection, median",
        goal="time ratio ≤ 1.05; tokens minted = 1",
        better="lower",
        limit=1.05,
        notes=[
            f"ours: `create_engine(settings, credentials=IamTokenProvider(...), "
            f"poolclass=NullPool)`, `engine.connect()` + close: {opened:,} timed logins "
            f"with a token signed by boto3 under moto; tokens minted: {provider.minted}. "
            f"The two sides alternate in {sizes.rounds * 4} rounds.",
            f"baseline: the same engine (`create_engine(..., credentials="
            f"StaticPasswordProvider(...), poolclass=NullPool)`) with a static password of "
            f"the token's length ({len(token)} characters): only the password's source "
            "differs. Both roles use SCRAM-SHA-256, so client and server do the same work.",
            f"the baseline's login through the engine vs by raw `psycopg2.connect` + close, "
            f"alternated: {engine_ms:.2f} ms vs {raw_ms:.2f} ms (ratio "
            f"{engine_ms / raw_ms:.2f}): SQLAlchemy's cost per new connection, on both sides.",
            f"the password's length alone, raw psycopg2: {long_ms:.2f} ms with "
            f"{len(token)} characters vs {short_ms:.2f} ms with {len(short_password)} (ratio "
            f"{long_ms / short_ms:.2f}). RDS checks IAM tokens with PAM over TLS, not SCRAM, "
            "so this cost is local to the benchmark's server.",
        ],
        extra={
            "minted": provider.minted,
            "long_password_ms": long_ms,
            "short_password_ms": short_ms,
        },
    )

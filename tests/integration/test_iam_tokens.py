"""RDS IAM tokens, proven by the server.

The role's password is set to exactly the token boto3 would mint for
(host, port, user, region, time) under a frozen clock, so the server accepts
a login only when the engine presents that token.
"""

import datetime as dt
from dataclasses import replace

import boto3
import pytest
import sqlalchemy as sa
import time_machine
from moto import mock_aws

from dataaccess import Database, create_engine
from dataaccess.credentials import IAM_TOKEN_LIFETIME, IAM_TOKEN_REFRESH_MARGIN, IamTokenProvider
from scripts.devdb import set_password

REGION = "eu-west-1"
T0 = dt.datetime(2026, 1, 5, 9, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def rds():
    with mock_aws():
        yield boto3.client("rds", region_name=REGION)


@pytest.fixture
def iam_settings(app_settings, login_role):
    return replace(app_settings, user=login_role, auth="iam", password=None, region=REGION)


def expected_token(rds, settings):
    return rds.generate_db_auth_token(
        DBHostname=settings.host, Port=settings.port, DBUsername=settings.user, Region=REGION
    )


def connect_once(engine):
    """Open a brand-new physical connection (NullPool) and run a query as the IAM role."""
    with engine.connect() as conn:
        return conn.scalar(sa.text("SELECT current_user"))


def test_engine_logs_in_with_tokens_reused_refreshed_and_recovered(
    rds, iam_settings, admin_settings
):
    user = iam_settings.user
    provider = IamTokenProvider(
        host=iam_settings.host, port=iam_settings.port, user=user, region=REGION, client=rds
    )
    engine = create_engine(iam_settings, credentials=provider, poolclass=sa.NullPool)
    with time_machine.travel(T0, tick=False) as clock:
        set_password(admin_settings, user, expected_token(rds, iam_settings))
        assert connect_once(engine) == user
        assert provider.minted == 1

        # Inside the token's lifetime every new connection reuses it.
        for minutes in (1, 5, 13):
            clock.move_to(T0 + dt.timedelta(minutes=minutes))
            assert connect_once(engine) == user
        assert provider.minted == 1

        # Past the refresh point the server takes only the next token, and the
        # provider mints it before trying.
        refresh_at = T0 + dt.timedelta(seconds=IAM_TOKEN_LIFETIME - IAM_TOKEN_REFRESH_MARGIN)
        clock.move_to(refresh_at)
        set_password(admin_settings, user, expected_token(rds, iam_settings))
        assert connect_once(engine) == user
        assert provider.minted == 2

        # The server stops accepting the cached token while it is still cached:
        # the first login is refused, the engine mints a fresh token, retries once.
        clock.move_to(refresh_at + dt.timedelta(minutes=2))
        set_password(admin_settings, user, expected_token(rds, iam_settings))
        assert connect_once(engine) == user
        assert provider.minted == 3
    engine.dispose()


def test_a_fresh_token_that_is_refused_is_not_retried(rds, iam_settings, admin_settings):
    provider = IamTokenProvider(
        host=iam_settings.host,
        port=iam_settings.port,
        user=iam_settings.user,
        region=REGION,
        client=rds,
    )
    engine = create_engine(iam_settings, credentials=provider, poolclass=sa.NullPool)
    set_password(admin_settings, iam_settings.user, "not-any-token")
    with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
        connect_once(engine)
    assert provider.minted == 1
    engine.dispose()


def test_default_provider_signs_for_the_configured_endpoint(
    rds, iam_settings, admin_settings, admin
):
    """Database.from_settings builds its own IAM provider and boto3 client (moto answers)."""
    with time_machine.travel(T0, tick=False):
        set_password(admin_settings, iam_settings.user, expected_token(rds, iam_settings))
        db = Database.from_settings(iam_settings)
        conns = [db.writer.connect() for _ in range(4)]  # four physical connections
        assert [c.scalar(sa.text("SELECT current_user")) for c in conns] == [iam_settings.user] * 4
        sessions = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = %s", (iam_settings.user,)
        ).fetchone()
        assert sessions == (4,)
        for c in conns:
            c.close()
        db.dispose()

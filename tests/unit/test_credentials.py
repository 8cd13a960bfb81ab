"""Credential providers: caching, expiry and invalidation, with moto for AWS (no database)."""

import json
import random
import threading

import boto3
import pytest
from moto import mock_aws

from dataaccess import Settings
from dataaccess.credentials import (
    IAM_TOKEN_LIFETIME,
    IAM_TOKEN_REFRESH_MARGIN,
    IamTokenProvider,
    SecretsManagerProvider,
    StaticPasswordProvider,
    provider_for,
)
from dataaccess.resilience import backoff_delays

REGION = "eu-west-1"


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def aws():
    with mock_aws():
        yield


def iam_provider(clock):
    return IamTokenProvider(
        host="db.example", port=5432, user="app_iam", region=REGION, clock=clock
    )


@pytest.mark.usefixtures("aws")
def test_iam_token_is_reused_until_near_expiry_then_reminted():
    clock = FakeClock()
    provider = iam_provider(clock)
    first = provider.get()
    assert not first.cached
    assert "db.example:5432" in first.password
    assert "DBUser=app_iam" in first.password
    clock.now += IAM_TOKEN_LIFETIME - IAM_TOKEN_REFRESH_MARGIN - 1
    again = provider.get()
    assert again.cached
    assert again.password == first.password
    assert provider.minted == 1
    clock.now += 1
    assert not provider.get().cached
    assert provider.minted == 2


@pytest.mark.usefixtures("aws")
def test_invalidate_forces_a_fresh_token():
    provider = iam_provider(FakeClock())
    provider.get()
    provider.invalidate()
    assert not provider.get().cached
    assert provider.minted == 2


@pytest.mark.usefixtures("aws")
def test_many_threads_share_one_minted_token():
    provider = iam_provider(FakeClock())
    barrier = threading.Barrier(16)
    tokens = []

    def worker():
        barrier.wait()
        tokens.append(provider.get().password)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(tokens)) == 1
    assert provider.minted == 1


@pytest.mark.usefixtures("aws")
def test_a_token_is_reminted_before_its_signing_credentials_expire():
    clock = FakeClock()
    expiries = [clock.now + 5 * 60, clock.now + 60 * 60]  # a role session ending in 5 minutes
    provider = IamTokenProvider(
        host="db.example",
        port=5432,
        user="app_iam",
        region=REGION,
        clock=clock,
        credential_expiry=lambda: expiries[0] if provider.minted == 0 else expiries[1],
    )
    assert not provider.get().cached
    clock.now += 5 * 60 - IAM_TOKEN_REFRESH_MARGIN - 1
    assert provider.get().cached  # still inside the signer's lifetime
    clock.now += 1
    assert not provider.get().cached  # the signer is about to expire: mint with fresh keys
    assert provider.minted == 2
    # The fresh credentials outlive the token, so its own 15 minutes bound it again.
    clock.now += IAM_TOKEN_LIFETIME - IAM_TOKEN_REFRESH_MARGIN - 1
    second = provider.get()
    assert second.cached
    assert provider.minted == 2


@pytest.mark.usefixtures("aws")
def test_static_keys_carry_no_expiry_so_the_token_lifetime_rules():
    provider = iam_provider(FakeClock())
    provider.get()
    assert provider._session_credential_expiry() is None


def test_backoff_is_full_jitter_within_a_doubling_cap():
    rng = random.Random(7)
    delays = backoff_delays(base=0.1, cap=1.0, rng=rng)
    drawn = [next(delays) for _ in range(200)]
    ceilings = [min(1.0, 0.1 * 2**i) for i in range(200)]
    assert all(0 <= d <= c for d, c in zip(drawn, ceilings, strict=True))
    assert max(drawn[10:]) > 0.5  # reaches towards the cap, not stuck at the base
    assert len(set(drawn)) == len(drawn)  # jittered: no two clients in lockstep


def test_token_never_shows_in_a_credential_repr():
    cred = StaticPasswordProvider("u", "s3cret-value").get()
    assert "s3cret-value" not in repr(cred)


@pytest.fixture
def secret(aws):
    client = boto3.client("secretsmanager", region_name=REGION)
    arn = client.create_secret(
        Name="db/master", SecretString=json.dumps({"username": "master", "password": "one"})
    )["ARN"]
    return client, arn


def test_secret_is_cached_for_its_ttl(secret):
    client, arn = secret
    clock = FakeClock()
    provider = SecretsManagerProvider(secret_id=arn, region=REGION, ttl=60, clock=clock)
    assert provider.get().password == "one"
    client.put_secret_value(SecretId=arn, SecretString='{"username":"master","password":"two"}')
    assert provider.get().password == "one"  # still cached
    assert provider.get().cached
    clock.now += 60
    assert provider.get().password == "two"
    assert provider.fetches == 2


def test_invalidated_secret_is_read_again(secret):
    client, arn = secret
    provider = SecretsManagerProvider(secret_id=arn, region=REGION, ttl=3600)
    provider.get()
    client.put_secret_value(SecretId=arn, SecretString='{"username":"master","password":"two"}')
    provider.invalidate()
    assert provider.get().password == "two"


@pytest.mark.parametrize("body", ["not json", '{"username": "u"}', '["u", "p"]'])
def test_malformed_secret_is_refused_without_echoing_it(secret, body):
    client, _ = secret
    arn = client.create_secret(Name="db/bad", SecretString=body)["ARN"]
    provider = SecretsManagerProvider(secret_id=arn, region=REGION)
    with pytest.raises(ValueError, match="must be a JSON object") as caught:
        provider.get()
    assert body not in str(caught.value)


def test_db_iam_host_applies_to_the_writer_only():
    settings = Settings.from_env(
        {
            "DB_HOST": "writer.example",
            "DB_READER_HOST": "reader.example",
            "DB_IAM_HOST": "tunnel.example",
            "DB_NAME": "app",
            "DB_USER": "app_iam",
            "DB_REGION": REGION,
            "DB_SSLMODE": "require",
            "DB_ALLOW_INSECURE_TLS": "true",
        }
    )
    writer = provider_for(settings, settings.host)
    reader = provider_for(settings, settings.reader_host)
    assert isinstance(writer, IamTokenProvider)
    assert isinstance(reader, IamTokenProvider)
    assert (writer.host, reader.host) == ("tunnel.example", "reader.example")

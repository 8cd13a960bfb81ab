"""Credential providers forget what they fetched, and how, when told to `reset` (a SnapStart
restore); the RDS token signer signs exactly what botocore's RDS client signs. No database."""

from __future__ import annotations

import datetime as dt
import json

import boto3
import botocore.session
import pytest
import time_machine
from moto import mock_aws

from dataaccess.credentials import (
    IamTokenProvider,
    RdsTokenSigner,
    SecretsManagerProvider,
    StaticPasswordProvider,
)
from scripts.localiam import OTHER_AWS_CREDENTIALS, IamKey

REGION = "eu-west-1"
FROZEN = dt.datetime(2026, 1, 5, 9, 0, 0, tzinfo=dt.UTC)


@pytest.fixture
def use_key(monkeypatch):
    """Make `key` the process's only AWS credentials."""

    def use(key: IamKey) -> IamKey:
        for name in OTHER_AWS_CREDENTIALS:
            monkeypatch.delenv(name, raising=False)
        for name, value in key.env().items():
            monkeypatch.setenv(name, value)
        return key

    return use


def test_the_signer_signs_what_the_rds_client_signs(use_key):
    use_key(IamKey.generate(temporary=True))  # a session token is signed in as well
    with time_machine.travel(FROZEN, tick=False):
        client = boto3.session.Session().client("rds", region_name=REGION)
        expected = client.generate_db_auth_token(
            DBHostname="db.example", Port=5432, DBUsername="app_iam", Region=REGION
        )
        signer = RdsTokenSigner(botocore.session.get_session(), REGION)
        token = signer.generate_db_auth_token(
            DBHostname="db.example", Port=5432, DBUsername="app_iam", Region=REGION
        )
    assert token == expected


def test_after_a_reset_a_token_is_minted_with_the_credentials_of_the_moment(use_key):
    snapshot_key = use_key(IamKey.generate())
    provider = IamTokenProvider(host="db.example", port=5432, user="app_iam", region=REGION)
    first = provider.get()
    assert provider.get().cached

    restored_key = use_key(IamKey.generate())
    provider.reset()
    fresh = provider.get()

    assert not fresh.cached
    assert provider.minted == 2
    assert f"X-Amz-Credential={snapshot_key.access_key_id}" in first.password
    assert f"X-Amz-Credential={restored_key.access_key_id}" in fresh.password


def test_a_client_given_to_the_provider_is_kept_through_a_reset(use_key):
    use_key(IamKey.generate())
    with mock_aws():
        client = boto3.client("rds", region_name=REGION)
        provider = IamTokenProvider(
            host="db.example", port=5432, user="app_iam", region=REGION, client=client
        )
        provider.get()
        provider.reset()
        assert not provider.get().cached
        assert provider._rds() is client
        assert provider.minted == 2


def test_after_a_reset_the_secret_is_read_again():
    with mock_aws():
        manager = boto3.client("secretsmanager", region_name=REGION)
        arn = manager.create_secret(
            Name="db/app", SecretString=json.dumps({"username": "app", "password": "one"})
        )["ARN"]
        provider = SecretsManagerProvider(secret_id=arn, region=REGION, ttl=3600)
        assert provider.get().password == "one"
        manager.put_secret_value(
            SecretId=arn, SecretString=json.dumps({"username": "app", "password": "two"})
        )
        assert provider.get().cached

        provider.reset()

        fresh = provider.get()
        assert (fresh.password, fresh.cached) == ("two", False)
        assert provider.fetches == 2


def test_a_static_password_survives_a_reset():
    provider = StaticPasswordProvider("app", "s3cret")
    provider.reset()
    assert provider.get().password == "s3cret"

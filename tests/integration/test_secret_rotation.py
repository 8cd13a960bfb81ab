"""Secrets Manager rotation: the next new connection is refused once, re-reads, gets in."""

import json
import logging
from dataclasses import replace

import boto3
import pytest
import sqlalchemy as sa
from moto import mock_aws

from dataaccess import Database
from dataaccess.credentials import SecretsManagerProvider
from scripts.devdb import set_password

REGION = "eu-west-1"


@pytest.fixture
def secrets_client():
    with mock_aws():
        yield boto3.client("secretsmanager", region_name=REGION)


def test_rotation_costs_one_refused_login_and_no_failed_call(
    secrets_client, app_settings, login_role, admin_settings, caplog
):
    def store(password):
        return json.dumps({"username": login_role, "password": password})

    arn = secrets_client.create_secret(Name="db/app", SecretString=store("before-rotation"))["ARN"]
    set_password(admin_settings, login_role, "before-rotation")
    settings = replace(
        app_settings, auth="secret", user=None, password=None, secret_id=arn, region=REGION
    )
    provider = SecretsManagerProvider(secret_id=arn, region=REGION, ttl=3600, client=secrets_client)
    db = Database.from_settings(settings, credentials=provider)
    held = db.writer.connect()  # a pooled connection from before the rotation
    assert held.scalar(sa.text("SELECT current_user")) == login_role

    # Rotate: the secret and the role's password change together.
    secrets_client.put_secret_value(SecretId=arn, SecretString=store("after-rotation"))
    set_password(admin_settings, login_role, "after-rotation")

    with caplog.at_level(logging.INFO, logger="dataaccess.engine"):
        fresh = db.writer.connect()  # a new physical connection: cached secret is stale
        assert fresh.scalar(sa.text("SELECT current_user")) == login_role
    refusals = [r for r in caplog.records if "login refused" in r.getMessage()]
    assert len(refusals) == 1
    assert provider.fetches == 2
    # The connection opened before the rotation keeps working.
    assert held.scalar(sa.text("SELECT 1")) == 1
    for record in caplog.records:
        assert "rotation" not in record.getMessage()  # no password text in any log line
    held.close()
    fresh.close()
    db.dispose()

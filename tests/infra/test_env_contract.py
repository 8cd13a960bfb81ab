"""Every variable the app needs in AWS is set by the task definitions and the
functions, with values `Settings.from_env` accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dataaccess.settings import ENV_VARS, Settings
from tests.infra.conftest import Resolver

# Read by the API container (gunicorn.conf.py, create_app) and the functions, beside DB_*.
APP_VARS = {"PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS", "LOG_LEVEL", "POWERTOOLS_SERVICE_NAME"}
# The API's token checks (api/auth.py, AuthSettings.from_env).
AUTH_VARS = {
    "AUTH_ISSUER",
    "AUTH_AUDIENCE",
    "AUTH_JWKS_URL",
    "AUTH_ADMIN_SCOPE",
    "AUTH_CUSTOMER_CLAIM",
}
APP_VARS |= AUTH_VARS
KNOWN = set(ENV_VARS) | APP_VARS
# What the app must be given in AWS with DB_AUTH=iam (AWS_REGION is not set by ECS).
REQUIRED_IAM = {"DB_HOST", "DB_READER_HOST", "DB_NAME", "DB_USER", "DB_AUTH", "DB_REGION"}
REQUIRED_IAM |= {"DB_SSLMODE", "DB_SSLROOTCERT"}


def container_env(template: dict[str, Any], resolver: Resolver, stack: str) -> dict[str, Any]:
    (task,) = (r for r in template["Resources"].values() if r["Type"] == "AWS::ECS::TaskDefinition")
    # The application's container (api, migrate), not an optional sidecar.
    (container,) = (c for c in task["Properties"]["ContainerDefinitions"] if "Name" in c)
    env = {e["Name"]: resolver.resolve(stack, e["Value"]) for e in container["Environment"]}
    # ECS `secrets` arrive as environment variables too; their values are not ours to see.
    env.update({s["Name"]: "injected-by-ecs" for s in container.get("Secrets", [])})
    return env


def function_env(template: dict[str, Any], resolver: Resolver, function: str) -> dict[str, Any]:
    props = template["Resources"][function]["Properties"]
    return resolver.resolve("lambda", props["Environment"]["Variables"])


def settings_from(env: dict[str, Any], tmp_path: Path, expected_ca: str) -> Settings:
    """Settings.from_env on the template's values, the CA bundle path swapped for a real file."""
    assert env["DB_SSLROOTCERT"] == expected_ca
    bundle = tmp_path / "rds-global-bundle.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\n")
    values = {k: str(v) for k, v in env.items()} | {"DB_SSLROOTCERT": str(bundle)}
    return Settings.from_env(values)


def test_api_task_provides_the_iam_settings(templates, resolver, tmp_path):
    env = container_env(templates["ecs-api"], resolver, "ecs-api")
    assert set(env) <= KNOWN, set(env) - KNOWN
    assert env.keys() >= REQUIRED_IAM | {"PORT", "WEB_CONCURRENCY", "GUNICORN_THREADS", "LOG_LEVEL"}
    assert env["PORT"] == 8000
    assert env.keys() >= AUTH_VARS  # no anonymous API in AWS either
    settings = settings_from(env, tmp_path, "/app/certs/rds-global-bundle.pem")
    assert settings.auth == "iam"
    assert settings.sslmode == "verify-full"
    assert settings.user == "app_iam"
    assert settings.region == "eu-west-1"
    assert settings.port == 5432
    assert settings.reader_host is not None
    assert settings.reader_host != settings.host
    assert settings.password is None
    assert settings.secret_id is None


@pytest.mark.parametrize(
    ("function", "service"), [("StockEventsFunction", "stock-events"), ("ReportFunction", "report")]
)
def test_functions_provide_the_iam_settings(templates, resolver, tmp_path, function, service):
    env = function_env(templates["lambda"], resolver, function)
    assert set(env) <= KNOWN, set(env) - KNOWN
    assert env.keys() >= REQUIRED_IAM | {"POWERTOOLS_SERVICE_NAME", "LOG_LEVEL"}
    assert env["POWERTOOLS_SERVICE_NAME"] == service
    # Lambda reserves AWS_REGION; setting it would fail the deploy.
    assert "AWS_REGION" not in env
    settings = settings_from(env, tmp_path, "/var/task/certs/rds-global-bundle.pem")
    assert settings.auth == "iam"
    # The report reads as its own read-only role (migration 0006), not the writer.
    assert settings.user == ("app_reader" if function == "ReportFunction" else "app_iam")
    assert settings.reader_host is not None
    assert settings.reader_host != settings.host


def test_migration_task_provides_the_master_login_and_the_iam_role_name(
    templates, resolver, tmp_path
):
    env = container_env(templates["migration"], resolver, "migration")
    assert set(env) <= KNOWN, set(env) - KNOWN
    settings = settings_from(env, tmp_path, "/app/certs/rds-global-bundle.pem")
    assert settings.auth == "password"
    assert settings.iam_user == "app_iam"
    assert settings.password == "injected-by-ecs"
    assert settings.sslmode == "verify-full"
    assert settings.region == "eu-west-1"


def test_all_consumers_agree_on_host_database_and_iam_user(templates, resolver):
    api = container_env(templates["ecs-api"], resolver, "ecs-api")
    migration = container_env(templates["migration"], resolver, "migration")
    functions = [
        function_env(templates["lambda"], resolver, f)
        for f in ("StockEventsFunction", "ReportFunction")
    ]
    for env in (migration, *functions):
        assert env["DB_HOST"] == api["DB_HOST"]
        assert env["DB_NAME"] == api["DB_NAME"]
    assert migration["DB_IAM_USER"] == api["DB_USER"]
    stock_events, report = functions
    assert stock_events["DB_USER"] == api["DB_USER"]
    assert report["DB_USER"] == "app_reader" != api["DB_USER"]
    assert api["DB_HOST"] == "<Cluster.Endpoint.Address>"
    assert api["DB_READER_HOST"] == "<Cluster.ReadEndpoint.Address>"


def test_report_reads_as_the_reader_role_that_terraform_and_the_migration_know(templates):
    """lambda ReportDbUser, Terraform db_reader_user and migration 0006 share one default."""
    import re

    from tests.infra.conftest import REPO, TF_DIR

    lambda_ = templates["lambda"]
    report = lambda_["Resources"]["ReportFunction"]["Properties"]["Environment"]["Variables"]
    assert report["DB_USER"] == {"Ref": "ReportDbUser"}
    stock = lambda_["Resources"]["StockEventsFunction"]["Properties"]["Environment"]["Variables"]
    assert stock["DB_USER"] == {
        "Fn::ImportValue": {"Fn::Sub": "${ProjectName}-${EnvironmentName}-IamDbUser"}
    }
    default = lambda_["Parameters"]["ReportDbUser"]["Default"]
    variables = (TF_DIR / "variables.tf").read_text()
    block = re.search(r'variable "db_reader_user" \{.*?\n\}', variables, re.S)
    assert block, "terraform has no db_reader_user"
    assert re.search(rf'default\s*=\s*"{default}"', block.group(0))
    (migration,) = (REPO / "alembic" / "versions").glob("0006_*.py")
    assert f'DEFAULT_READER = "{default}"' in migration.read_text()
    aurora_user = templates["aurora"]["Parameters"]["IamDbUser"]["Default"]
    assert default != aurora_user

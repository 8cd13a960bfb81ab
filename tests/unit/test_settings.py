"""Settings.from_env: defaults, and one clear error per bad variable; Settings.to_env,
its inverse (no database)."""

from dataclasses import fields, replace

import pytest

from dataaccess import Settings, SettingsError
from dataaccess.settings import ENV_VARS

BASE = {
    "DB_HOST": "writer.example",
    "DB_NAME": "app",
    "DB_USER": "app_iam",
    "DB_REGION": "eu-west-1",
    "DB_SSLMODE": "require",
    "DB_ALLOW_INSECURE_TLS": "true",
}


PROXY_ENDPOINT = "app.proxy-a1b2c3d4e5f6.eu-west-1.rds.amazonaws.com"
CLUSTER_ENDPOINT = "app.cluster-a1b2c3d4e5f6.eu-west-1.rds.amazonaws.com"


def env(**overrides):
    merged = {**BASE, **overrides}
    return {k: v for k, v in merged.items() if v is not None}


def test_defaults_are_production_shaped():
    settings = Settings.from_env(env(DB_SSLMODE=None, DB_SSLROOTCERT=__file__))
    assert settings.auth == "iam"
    assert settings.sslmode == "verify-full"
    assert settings.port == 5432
    assert (settings.pool_size, settings.max_overflow) == (5, 5)
    assert settings.iam_user == "app_iam"
    assert settings.in_lambda is False


def test_region_falls_back_to_aws_region():
    settings = Settings.from_env(env(DB_REGION=None, AWS_REGION="ap-northeast-1"))
    assert settings.region == "ap-northeast-1"


VERIFIED = {"DB_SSLMODE": "verify-full", "DB_SSLROOTCERT": __file__, "DB_ALLOW_INSECURE_TLS": None}


def test_lambda_is_detected_from_its_environment():
    assert Settings.from_env(env(AWS_LAMBDA_FUNCTION_NAME="stock-events", **VERIFIED)).in_lambda


def test_verify_full_needs_no_opt_in_anywhere():
    settings = Settings.from_env(env(ECS_CONTAINER_METADATA_URI_V4="http://x/v4", **VERIFIED))
    assert settings.sslmode == "verify-full"


@pytest.mark.parametrize(
    ("runtime_env", "runtime", "budget"),
    [
        ({}, None, 3),  # the API: answer 503 soon rather than hold a worker thread
        ({"AWS_LAMBDA_FUNCTION_NAME": "fn", **VERIFIED}, None, 60),  # capped by remaining time
        ({}, "migration", 300),  # wait for a restart or a resume before migrating
        ({"DB_CONNECT_RETRY_BUDGET": "7"}, "migration", 7),
    ],
)
def test_the_connect_retry_budget_defaults_per_runtime(runtime_env, runtime, budget):
    settings = Settings.from_env(env(**runtime_env), runtime=runtime)
    assert settings.connect_retry_budget == budget


def test_the_socket_timeout_outlasts_the_statement_timeout():
    assert Settings.from_env(env()).socket_timeout == 35
    assert Settings.from_env(env(DB_STATEMENT_TIMEOUT_MS="1500")).socket_timeout == 7
    # No statement timeout, no client-side bound either (a long report may be legitimate).
    assert Settings.from_env(env(DB_STATEMENT_TIMEOUT_MS="0")).socket_timeout == 0
    assert Settings.from_env(env(DB_SOCKET_TIMEOUT="9")).socket_timeout == 9


def test_dead_peer_detection_is_keepalive_idle_plus_its_probes():
    assert Settings.from_env(env()).dead_peer_seconds == 10 + 3 * 3
    tuned = Settings.from_env(env(DB_KEEPALIVES_IDLE="5", DB_KEEPALIVES_COUNT="2"))
    assert tuned.dead_peer_seconds == 5 + 3 * 2


def test_password_never_shows_in_repr():
    settings = Settings.from_env(env(DB_AUTH="password", DB_PASSWORD="hunter2-secret"))
    assert "hunter2-secret" not in repr(settings)
    assert "***" in repr(settings)


def test_secret_mode_takes_the_user_from_the_secret():
    settings = Settings.from_env(env(DB_AUTH="secret", DB_USER=None, DB_SECRET_ID="arn:secret"))
    assert settings.user is None
    assert settings.secret_id == "arn:secret"


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"DB_HOST": None}, "DB_HOST"),
        ({"DB_HOST": "   "}, "DB_HOST"),
        ({"DB_NAME": None}, "DB_NAME"),
        ({"DB_USER": None}, "DB_USER"),
        ({"DB_AUTH": "kerberos"}, "DB_AUTH"),
        ({"DB_AUTH": "secret"}, "DB_SECRET_ID"),
        ({"DB_AUTH": "password"}, "DB_PASSWORD"),
        ({"DB_REGION": None}, "DB_REGION"),
        ({"DB_PORT": "fivefourthreetwo"}, "DB_PORT"),
        ({"DB_PORT": "70000"}, "DB_PORT"),
        ({"DB_SSLMODE": "sometimes"}, "DB_SSLMODE"),
        ({"DB_ALLOW_INSECURE_TLS": None}, "DB_SSLMODE"),  # require does not verify the server
        ({"DB_SSLMODE": "verify-ca", "DB_ALLOW_INSECURE_TLS": None}, "DB_SSLMODE"),
        ({"DB_ALLOW_INSECURE_TLS": "maybe"}, "DB_ALLOW_INSECURE_TLS"),
        ({"AWS_EXECUTION_ENV": "AWS_Lambda_python3.12"}, "DB_ALLOW_INSECURE_TLS"),  # not in AWS
        ({"ECS_CONTAINER_METADATA_URI_V4": "http://169.254.170.2/v4/x"}, "DB_ALLOW_INSECURE_TLS"),
        ({"DB_SSLMODE": "verify-full"}, "DB_SSLROOTCERT"),
        ({"DB_SSLMODE": "verify-ca", "DB_SSLROOTCERT": "/no/such/bundle.pem"}, "DB_SSLROOTCERT"),
        ({"DB_POOL_SIZE": "0"}, "DB_POOL_SIZE"),
        ({"DB_POOL_SIZE": "many"}, "DB_POOL_SIZE"),
        ({"DB_MAX_OVERFLOW": "-1"}, "DB_MAX_OVERFLOW"),
        ({"DB_POOL_RECYCLE": "1.5"}, "DB_POOL_RECYCLE"),
        ({"DB_POOL_PRE_PING_IDLE": "-1"}, "DB_POOL_PRE_PING_IDLE"),
        ({"DB_CONNECT_TIMEOUT": "0"}, "DB_CONNECT_TIMEOUT"),
        ({"DB_STATEMENT_TIMEOUT_MS": "-5"}, "DB_STATEMENT_TIMEOUT_MS"),
        ({"DB_APPLICATION_NAME": "x" * 64}, "DB_APPLICATION_NAME"),
        ({"DB_SECRET_TTL": "forever"}, "DB_SECRET_TTL"),
        ({"DB_CONNECT_TIMEOUT": "1"}, "DB_CONNECT_TIMEOUT"),
        ({"DB_CONNECT_RETRY_BUDGET": "-1"}, "DB_CONNECT_RETRY_BUDGET"),
        ({"DB_CONNECT_RETRY_BUDGET": "soon"}, "DB_CONNECT_RETRY_BUDGET"),
        ({"DB_KEEPALIVES_IDLE": "0"}, "DB_KEEPALIVES_IDLE"),
        ({"DB_KEEPALIVES_INTERVAL": "0"}, "DB_KEEPALIVES_INTERVAL"),
        ({"DB_KEEPALIVES_COUNT": "0"}, "DB_KEEPALIVES_COUNT"),
        ({"DB_SOCKET_TIMEOUT": "-1"}, "DB_SOCKET_TIMEOUT"),
        ({"DB_SECRET_RETRY_WINDOW": "-1"}, "DB_SECRET_RETRY_WINDOW"),
        ({"DB_IAM_USER": "app-iam; DROP ROLE x"}, "DB_IAM_USER"),
        ({"DB_IAM_USER": "1app"}, "DB_IAM_USER"),
        ({"DB_IAM_USER": "rôle"}, "DB_IAM_USER"),  # ASCII only, as the migrations check
        ({"DB_IAM_USER": "a" * 64}, "DB_IAM_USER"),
        ({"DB_PROXY": "maybe"}, "DB_PROXY"),
        ({"DB_HOST": PROXY_ENDPOINT}, "DB_PROXY"),  # the proxy would refuse the login
        ({"DB_READER_HOST": PROXY_ENDPOINT.replace(".proxy-", "-ro.endpoint.proxy-")}, "DB_PROXY"),
        ({"DB_PROXY": "true", "DB_HOST": CLUSTER_ENDPOINT}, "DB_PROXY"),
        (
            {"DB_PROXY": "true", "DB_HOST": PROXY_ENDPOINT, "DB_IAM_HOST": CLUSTER_ENDPOINT},
            "DB_PROXY",
        ),
    ],
)
def test_each_bad_variable_is_named_in_one_clear_error(overrides, variable):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env(**overrides))
    message = str(caught.value)
    assert message.startswith(variable), message
    assert "\n" not in message


def test_proxy_mode_is_off_unless_asked_for():
    assert Settings.from_env(env()).proxy is False
    assert Settings.from_env(env(DB_HOST=CLUSTER_ENDPOINT)).proxy is False


@pytest.mark.parametrize(
    "proxy_env",
    [
        {"DB_HOST": PROXY_ENDPOINT},
        # A custom read-only proxy endpoint for the reader, and a tunnel to the proxy.
        {
            "DB_HOST": PROXY_ENDPOINT,
            "DB_READER_HOST": "ro.endpoint.proxy-a1b2c3.eu-west-1.rds.amazonaws.com",
        },
        {"DB_HOST": "127.0.0.1", "DB_IAM_HOST": PROXY_ENDPOINT},
        # Reads may still go straight to the cluster's reader endpoint.
        {
            "DB_HOST": PROXY_ENDPOINT,
            "DB_READER_HOST": CLUSTER_ENDPOINT.replace("cluster-", "cluster-ro-"),
        },
    ],
)
def test_proxy_mode_takes_proxy_endpoints(proxy_env):
    settings = Settings.from_env(env(DB_PROXY="true", **proxy_env))
    assert settings.proxy is True
    assert settings.host == proxy_env["DB_HOST"]


@pytest.mark.parametrize(
    ("overrides", "variable"),
    [
        ({"DB_PROXY": "true"}, "DB_PROXY"),
        ({"DB_HOST": PROXY_ENDPOINT}, "DB_HOST"),
    ],
)
def test_migrations_never_go_through_the_proxy(overrides, variable):
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env(**overrides), runtime="migration")
    assert str(caught.value).startswith(variable)
    assert "writer endpoint" in str(caught.value)


def test_settings_are_immutable():
    settings = Settings.from_env(env())
    with pytest.raises(AttributeError):
        settings.host = "elsewhere"  # type: ignore[misc]


# -- to_env: the DB_* variables that give the settings back -------------------------

SECRET = env(DB_AUTH="secret", DB_USER=None, DB_SECRET_ID="arn:secret")
ROUND_TRIPS = {
    "password, reader": env(DB_AUTH="password", DB_PASSWORD="pw", DB_READER_HOST="reader.example"),
    "iam, verify-full": env(DB_PORT="6543", **VERIFIED),
    "secret, no user": SECRET,
    "proxy": env(
        DB_PROXY="true",
        DB_HOST=PROXY_ENDPOINT,
        DB_READER_HOST="ro.endpoint.proxy-a1b2c3.eu-west-1.rds.amazonaws.com",
        DB_IAM_HOST=PROXY_ENDPOINT,
    ),
    "lambda": env(AWS_LAMBDA_FUNCTION_NAME="fn", DB_CONNECT_RETRY_BUDGET="3", **VERIFIED),
    "no statement timeout": env(DB_STATEMENT_TIMEOUT_MS="0"),
    "socket timeout of another statement timeout": env(
        DB_STATEMENT_TIMEOUT_MS="1500", DB_SOCKET_TIMEOUT="35"
    ),
    "tuned": env(
        DB_POOL_SIZE="9",
        DB_MAX_OVERFLOW="0",
        DB_POOL_RECYCLE="-1",
        DB_POOL_PRE_PING_IDLE="0",
        DB_CONNECT_TIMEOUT="2",
        DB_KEEPALIVES_IDLE="4",
        DB_KEEPALIVES_INTERVAL="2",
        DB_KEEPALIVES_COUNT="5",
        DB_APPLICATION_NAME="reports",
        DB_SECRET_TTL="0",
        DB_SECRET_RETRY_WINDOW="0",
        DB_IAM_USER="app_writer",
    ),
}


@pytest.mark.parametrize("environ", ROUND_TRIPS.values(), ids=ROUND_TRIPS.keys())
def test_to_env_reads_back_as_the_same_settings(environ):
    settings = Settings.from_env(environ)

    assert Settings.from_env(settings.to_env(), runtime=settings.runtime) == settings


def test_to_env_reads_back_as_the_same_migration_settings():
    settings = Settings.from_env(env(DB_IAM_USER="app_writer"), runtime="migration")

    assert Settings.from_env(settings.to_env(), runtime="migration") == settings


def test_to_env_writes_the_login_and_only_what_is_not_the_default():
    settings = Settings.from_env(env(**VERIFIED))

    assert settings.to_env() == {
        "DB_HOST": "writer.example",
        "DB_PORT": "5432",
        "DB_NAME": "app",
        "DB_USER": "app_iam",
        "DB_AUTH": "iam",
        "DB_REGION": "eu-west-1",
        "DB_SSLMODE": "verify-full",
        "DB_SSLROOTCERT": __file__,
    }
    tuned = replace(settings, pool_size=9, statement_timeout_ms=1500, socket_timeout=7)
    assert tuned.to_env().keys() - settings.to_env().keys() == {
        "DB_POOL_SIZE",
        "DB_STATEMENT_TIMEOUT_MS",  # the socket timeout is its default for 1.5 s
    }


def test_an_unverified_sslmode_carries_its_opt_in():
    assert Settings.from_env(env()).to_env()["DB_ALLOW_INSECURE_TLS"] == "true"


def test_another_runtime_keeps_its_own_connect_budget():
    service = Settings.from_env(env())
    assert Settings.from_env(service.to_env(), runtime="migration").connect_retry_budget == 300
    patient = replace(service, connect_retry_budget=7)
    assert Settings.from_env(patient.to_env(), runtime="migration").connect_retry_budget == 7


def test_to_env_writes_only_a_password_the_settings_log_in_with():
    local = Settings.from_env(env(DB_AUTH="password", DB_PASSWORD="hunter2-secret"))
    assert local.to_env()["DB_PASSWORD"] == "hunter2-secret"
    for auth in ("iam", "secret"):
        assert "DB_PASSWORD" not in replace(local, auth=auth, secret_id="arn:secret").to_env()
    secret = Settings.from_env(SECRET).to_env()
    assert (secret["DB_SECRET_ID"], "DB_PASSWORD" in secret) == ("arn:secret", False)


def test_every_setting_is_a_variable_of_env_vars():
    """So to_env writes only documented variables: tests/infra/test_docs.py holds
    docs/configuration.md to ENV_VARS."""
    variables = {f"DB_{field.name.upper()}" for field in fields(Settings)} - {"DB_RUNTIME"}
    assert variables <= set(ENV_VARS)

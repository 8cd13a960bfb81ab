"""Engine factory: pool policy per runtime and credentials kept out of the URL (no database)."""

import pytest
from sqlalchemy.pool import QueuePool

from dataaccess import Settings, create_engine

ENV = {
    "DB_HOST": "writer.example",
    "DB_NAME": "app",
    "DB_USER": "app",
    "DB_AUTH": "password",
    "DB_PASSWORD": "pw-not-in-url",
    "DB_SSLMODE": "require",
    "DB_ALLOW_INSECURE_TLS": "true",
    "DB_POOL_SIZE": "7",
    "DB_MAX_OVERFLOW": "3",
}


def test_ecs_gets_the_configured_pool():
    engine = create_engine(Settings.from_env(ENV))
    assert isinstance(engine.pool, QueuePool)
    assert engine.pool.size() == 7
    assert engine.pool._max_overflow == 3
    # The idle-only ping replaces SQLAlchemy's ping-every-checkout (tests/integration/test_pool.py).
    assert not engine.pool._pre_ping


def test_idle_zero_selects_sqlalchemy_ping_on_every_checkout():
    engine = create_engine(Settings.from_env({**ENV, "DB_POOL_PRE_PING_IDLE": "0"}))
    assert engine.pool._pre_ping


def test_lambda_gets_one_connection_and_no_overflow():
    lambda_env = {**ENV, "AWS_LAMBDA_FUNCTION_NAME": "fn", "DB_SSLMODE": "verify-full"}
    engine = create_engine(Settings.from_env({**lambda_env, "DB_SSLROOTCERT": __file__}))
    assert engine.pool.size() == 1
    assert engine.pool._max_overflow == 0


def test_credentials_never_enter_the_url():
    engine = create_engine(Settings.from_env(ENV))
    rendered = engine.url.render_as_string(hide_password=False)
    assert "pw-not-in-url" not in rendered
    assert engine.url.username is None
    assert "pw-not-in-url" not in repr(engine)


def test_statement_parameters_never_appear_in_errors():
    assert create_engine(Settings.from_env(ENV)).hide_parameters


class _Captured(Exception):
    """Raised by the test's own do_connect listener: the connect never reaches a network."""


def startup_parameters(engine, monkeypatch) -> dict:
    """What this engine passes to psycopg2.connect, captured before any connection is made."""
    seen: dict = {}

    def capture(*cargs, **cparams):
        seen.update(cparams)
        raise _Captured

    # On this engine's dialect only: the engine's do_connect hook calls dialect.connect.
    monkeypatch.setattr(engine.dialect, "connect", capture)
    with pytest.raises(_Captured):
        engine.connect()
    return seen


def test_a_direct_login_sets_the_statement_timeout_in_its_startup_options(monkeypatch):
    params = startup_parameters(create_engine(Settings.from_env(ENV)), monkeypatch)
    assert params["options"] == "-c statement_timeout=30000"
    assert params["target_session_attrs"] == "read-write"


def test_proxy_mode_sends_no_startup_options_and_keeps_the_rest(monkeypatch):
    settings = Settings.from_env({**ENV, "DB_PROXY": "true"})
    params = startup_parameters(create_engine(settings), monkeypatch)
    assert "options" not in params  # RDS Proxy refuses any
    # application_name is a startup parameter the proxy accepts; the others are libpq's own.
    assert params["application_name"] == "dataaccess"
    assert params["keepalives"] == 1
    assert params["target_session_attrs"] == "read-write"
    reader = create_engine(settings, host="reader.example")
    assert "options" not in startup_parameters(reader, monkeypatch)


def test_proxy_mode_keeps_one_connection_per_lambda_environment():
    lambda_env = {**ENV, "AWS_LAMBDA_FUNCTION_NAME": "fn", "DB_SSLMODE": "verify-full"}
    env = {**lambda_env, "DB_SSLROOTCERT": __file__, "DB_PROXY": "true"}
    engine = create_engine(Settings.from_env(env))
    assert (engine.pool.size(), engine.pool._max_overflow) == (1, 0)

"""Engine factory: pool policy per runtime and credentials kept out of the URL (no database)."""

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

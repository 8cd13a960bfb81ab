"""Fixtures for the API: the app on this test's migrated database, its clients, a live server."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from api_helpers import REPO, wait_ready
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from api import create_app
from api.auth import Authenticator, AuthSettings
from dataaccess import Database, Settings
from scripts.devdb import local_settings
from scripts.localauth import LocalIssuer
from scripts.localpg import free_port


@pytest.fixture(scope="session")
def issuer(tmp_path_factory: pytest.TempPathFactory) -> LocalIssuer:
    """A local token issuer (key pair and JWKS file) for the whole session."""
    return LocalIssuer(tmp_path_factory.mktemp("issuer"))


@pytest.fixture
def app(db: Database, issuer: LocalIssuer) -> Flask:
    """The app, on this test's fresh database as the least-privilege role."""
    authenticator = Authenticator(AuthSettings.from_env(issuer.env()))
    return create_app({"TESTING": True, "DATABASE": db, "AUTHENTICATOR": authenticator})


@pytest.fixture
def app_without_database(issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    """The app pointed at a port where no database listens."""
    settings = local_settings(
        host="127.0.0.1",
        port=free_port(),
        dbname="x",
        user="app_iam",
        password="not-a-real-password",
        DB_CONNECT_RETRY_BUDGET="1",
    )
    for name, value in issuer.env().items():
        monkeypatch.setenv(name, value)
    app = create_app(settings=settings)
    yield app
    app.extensions["database"].dispose()


@pytest.fixture
def client(app: Flask, issuer: LocalIssuer) -> FlaskClient:
    """A test client for the app, sending an admin token (see test_api_auth for the rest)."""
    test_client = app.test_client()
    test_client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {issuer.token(admin=True)}"
    return test_client


@pytest.fixture
def anonymous(app: Flask) -> FlaskClient:
    """A test client that sends no token."""
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A test runner for the app's Click commands."""
    return app.test_cli_runner()


@pytest.fixture
def live_server(app_settings: Settings, issuer: LocalIssuer) -> Iterator[str]:
    """Gunicorn serving the API (as in the container) on this test's database; its base URL."""
    port = free_port()
    env = {
        **os.environ,
        **app_settings.to_env(),
        **issuer.env(),
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "2",
        "GUNICORN_THREADS": "8",
        "LOG_LEVEL": "warning",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "api/gunicorn.conf.py", "api:create_app()"],
        cwd=REPO,
        env=env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(f"{base}/readyz", proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=30)

"""Fixtures for the Lambda handlers: a fake context and fresh handler modules, each one a
separate "execution environment" with its own module-scope Database."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import ModuleType

import pytest

from dataaccess import Database, Settings, services
from scripts.invoke_local import LocalContext
from scripts.lambda_loader import load_fresh_handler, unload
from tests.lambda_.helpers import SEEDED_STOCK, lambda_env


@pytest.fixture
def lambda_context() -> LocalContext:
    """A fake LambdaContext."""
    return LocalContext()


@pytest.fixture
def handler_env(app_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Set a deployed function's DB_* environment (least-privilege role) for this test."""
    env = lambda_env(app_settings)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def new_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ModuleType]]:
    """Factory of fresh handler modules; env overrides apply to the rest of the test."""
    loaded: list[ModuleType] = []

    def factory(**env: str) -> ModuleType:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        module = load_fresh_handler()  # its logger writes to this test's captured stdout
        loaded.append(module)
        return module

    yield factory
    for module in loaded:
        unload(module)


@pytest.fixture
def handler(handler_env: dict[str, str], new_handler: Callable[..., ModuleType]) -> ModuleType:
    """A fresh handler module configured, through DB_*, for this test's database."""
    return new_handler()


@pytest.fixture
def seeded(db: Database) -> Database:
    """The products the recorded events move, with stock 5 each."""
    for sku, stock in SEEDED_STOCK.items():
        with db.unit_of_work() as uow:
            services.create_product(uow, sku=sku, name=sku.title(), price_cents=100, stock=stock)
    return db

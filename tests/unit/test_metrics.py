"""dataaccess.metrics: what the engine and the credential providers report, and to whom
(no database: connects go to a closed local port; moto answers for AWS)."""

from __future__ import annotations

import gc
import json
import logging
import weakref
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
from moto import mock_aws

from dataaccess import create_engine, metrics
from dataaccess.credentials import IamTokenProvider, SecretsManagerProvider
from scripts.devdb import local_settings
from scripts.localpg import free_port

REGION = "eu-west-1"


@pytest.fixture
def collector() -> Iterator[metrics.Collector]:
    """A registered collector, for this test only."""
    registered = metrics.register(metrics.Collector())
    registered.take()  # nothing from before this test
    yield registered
    metrics.unregister(registered)


def test_a_connect_that_gives_up_reports_its_retries_and_no_connect_time(
    collector: metrics.Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = local_settings(
        host="127.0.0.1",
        port=free_port(),  # nothing listens: every attempt is refused at once
        dbname="x",
        user="app",
        password="pw",
        DB_CONNECT_RETRY_BUDGET="1",
    )
    engine = create_engine(settings, poolclass=sa.NullPool)
    attempts: list[int] = []
    connect = engine.dialect.connect

    def counting(*args: Any, **kwargs: Any) -> Any:
        attempts.append(1)
        return connect(*args, **kwargs)

    monkeypatch.setattr(engine.dialect, "connect", counting)
    with pytest.raises(sa.exc.OperationalError):
        engine.connect()
    engine.dispose()

    figures = collector.take()
    assert len(attempts) >= 2  # refused, retried with backoff within the second
    assert figures.connect_retries == (len(attempts) - 1,)
    assert figures.connect_failures == 1
    assert figures.connects == 0
    assert figures.connect_seconds == ()
    assert figures.tokens_minted == figures.secret_reads == 0
    assert collector.take().empty  # taken: the next take starts from zero


@mock_aws
def test_a_minted_token_is_reported_once_and_a_cached_one_not_at_all(
    collector: metrics.Collector,
) -> None:
    other = metrics.register(metrics.Collector())
    gone = metrics.Collector()  # never registered
    provider = IamTokenProvider(host="db.example", port=5432, user="app_iam", region=REGION)
    provider.get()
    provider.get()  # cached
    provider.invalidate()
    provider.get()
    assert collector.take().tokens_minted == 2
    assert other.take().tokens_minted == 2  # every registered collector hears it
    assert gone.take().empty
    metrics.unregister(other)
    provider.invalidate()
    provider.get()
    assert other.take().empty
    assert collector.take().tokens_minted == 1


@mock_aws
def test_a_secret_read_is_reported_and_a_cached_one_is_not(collector: metrics.Collector) -> None:
    client = boto3.client("secretsmanager", region_name=REGION)
    arn = client.create_secret(
        Name="db/master", SecretString=json.dumps({"username": "master", "password": "one"})
    )["ARN"]
    provider = SecretsManagerProvider(secret_id=arn, region=REGION, ttl=300)
    provider.get()
    provider.get()
    figures = collector.take()
    assert figures.secret_reads == 1
    assert figures.as_metrics() == [("DbSecretReads", "Count", [1.0])]


def test_figures_become_named_series_with_bounded_samples(collector: metrics.Collector) -> None:
    for _ in range(metrics.MAX_SAMPLES + 50):
        metrics.connect_finished(0.0125, 1, ok=True)
    metrics.connect_finished(3.0, 4, ok=False)
    metrics.token_minted()

    figures = collector.take()
    assert figures.connects == metrics.MAX_SAMPLES + 50  # counts stay exact
    assert len(figures.connect_seconds) == metrics.MAX_SAMPLES  # samples are bounded
    assert len(figures.connect_retries) == metrics.MAX_SAMPLES
    series = {name: (unit, values) for name, unit, values in figures.as_metrics()}
    assert series == {
        "DbConnectTime": ("Milliseconds", [12.5] * metrics.MAX_SAMPLES),
        "DbConnectRetries": ("Count", [0.0] * metrics.MAX_SAMPLES),
        "DbConnectFailures": ("Count", [1.0]),
        "DbTokensMinted": ("Count", [1.0]),
    }


def test_a_failed_connect_keeps_its_retries_sample_when_under_the_bound(
    collector: metrics.Collector,
) -> None:
    metrics.connect_finished(0.02, 1, ok=True)
    metrics.connect_finished(3.0, 4, ok=False)
    series = {name: values for name, _, values in collector.take().as_metrics()}
    assert series == {
        "DbConnectTime": [20.0],
        "DbConnectRetries": [0.0, 3.0],
        "DbConnectFailures": [1.0],
    }


def test_the_registry_does_not_keep_a_collector_alive() -> None:
    collector = metrics.register(metrics.Collector())
    ref = weakref.ref(collector)
    del collector
    gc.collect()
    assert ref() is None
    metrics.connect_finished(0.01, 1, ok=True)  # and reporting still works


def test_a_host_callback_that_fails_never_fails_the_connect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[metrics.ConnectionFigures] = []

    def failing(collector: metrics.Collector) -> None:
        seen.append(collector.take())
        raise RuntimeError("the host's log is gone")

    collector = metrics.register(metrics.Collector(on_connect=failing))
    caplog.set_level(logging.WARNING, logger="dataaccess.metrics")
    metrics.connect_finished(0.01, 2, ok=True)
    metrics.unregister(collector)

    assert [f.connect_retries for f in seen] == [(1,)]
    assert [r.getMessage() for r in caplog.records] == ["connection figures not reported"]

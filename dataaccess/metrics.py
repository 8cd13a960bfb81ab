"""Connection figures for the process hosting the package, without a metrics library.

The engine's connect hook and the credential providers report what they did
(a connection opened or given up, a token minted, a secret read) to every
registered `Collector`; a host turns what it collects into metrics in its own
format (the Lambda handlers through Powertools Metrics, the API as embedded
metric format lines: docs/lambda.md and docs/api.md, "Metrics").

Only the rare events are reported: connects, mints and secret reads, never a
statement. With no collector registered a report costs one empty check.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable
from typing import NamedTuple

log = logging.getLogger(__name__)

# The CloudWatch namespace of every metric the hosts publish, unless configured.
DEFAULT_NAMESPACE = "dataaccess"

# EMF takes at most 100 values per metric per document; a host that takes its
# figures rarely (or never) keeps a bounded sample, and the counts stay exact.
MAX_SAMPLES = 100


class ConnectionFigures(NamedTuple):
    """What happened since the last `Collector.take()`.

    (A NamedTuple: a tenth of a frozen dataclass's cost at import, a Lambda cold start's.)
    """

    # One value per connection opened: minting a token or reading a secret, TLS, the
    # login, and any retries' backoff.
    connect_seconds: tuple[float, ...] = ()
    # One value per connect, opened or given up: the attempts after the first.
    connect_retries: tuple[int, ...] = ()
    connects: int = 0  # connections opened (connect_seconds may hold a sample of them)
    connect_failures: int = 0  # connects that gave up (the error reached the caller)
    tokens_minted: int = 0  # RDS IAM tokens minted
    secret_reads: int = 0  # Secrets Manager reads

    @property
    def empty(self) -> bool:
        """True when nothing was reported."""
        return not (
            self.connect_retries
            or self.connects
            or self.connect_failures
            or self.tokens_minted
            or self.secret_reads
        )

    def as_metrics(self) -> list[tuple[str, str, list[float]]]:
        """(name, CloudWatch unit, values) of each figure with data, as the hosts publish
        them: a sample per connect, counts only when not zero."""
        series: list[tuple[str, str, list[float]]] = []
        if self.connect_seconds:
            ms = [round(seconds * 1000, 3) for seconds in self.connect_seconds]
            series.append(("DbConnectTime", "Milliseconds", ms))
        if self.connect_retries:
            series.append(("DbConnectRetries", "Count", [float(n) for n in self.connect_retries]))
        for name, count in (
            ("DbConnectFailures", self.connect_failures),
            ("DbTokensMinted", self.tokens_minted),
            ("DbSecretReads", self.secret_reads),
        ):
            if count:
                series.append((name, "Count", [float(count)]))
        return series


class Collector:
    """Accumulates connection figures until taken; thread-safe.

    `on_connect`, when given, is called after each connect is recorded (on the
    connecting thread, outside any lock), for a host that reports per connect.
    """

    def __init__(self, on_connect: Callable[[Collector], None] | None = None) -> None:
        self._on_connect = on_connect
        self._lock = threading.Lock()
        self._reset()

    def take(self) -> ConnectionFigures:
        """The figures since the last take, and start again from zero."""
        with self._lock:
            figures = ConnectionFigures(
                connect_seconds=tuple(self._seconds),
                connect_retries=tuple(self._retries),
                connects=self._connects,
                connect_failures=self._failures,
                tokens_minted=self._minted,
                secret_reads=self._reads,
            )
            self._reset()
        return figures

    def _reset(self) -> None:
        self._seconds: list[float] = []
        self._retries: list[int] = []
        self._connects = self._failures = self._minted = self._reads = 0

    def _connected(self, seconds: float, attempts: int, ok: bool) -> None:
        with self._lock:
            if len(self._retries) < MAX_SAMPLES:
                self._retries.append(max(attempts - 1, 0))
            if ok:
                self._connects += 1
                if len(self._seconds) < MAX_SAMPLES:
                    self._seconds.append(seconds)
            else:
                self._failures += 1
        if self._on_connect is not None:
            try:
                self._on_connect(self)
            except Exception:  # a host's reporting never fails a connect
                log.warning("connection figures not reported", exc_info=True)

    def _count(self, *, minted: int = 0, reads: int = 0) -> None:
        with self._lock:
            self._minted += minted
            self._reads += reads


# Held weakly: a host's collector lives as long as the host keeps it (a handler
# module loaded afresh per test is one "execution environment" each).
_collectors: weakref.WeakSet[Collector] = weakref.WeakSet()
_registry_lock = threading.Lock()


def register(collector: Collector) -> Collector:
    """Send this process's connection figures to `collector` (too); return it."""
    with _registry_lock:
        _collectors.add(collector)
    return collector


def unregister(collector: Collector) -> None:
    """Stop sending figures to `collector`."""
    with _registry_lock:
        _collectors.discard(collector)


def _targets() -> list[Collector]:
    if not _collectors:
        return []
    with _registry_lock:
        return list(_collectors)


def connect_finished(seconds: float, attempts: int, *, ok: bool) -> None:
    """The engine's connect hook returned a connection (`ok`) or gave up, after `attempts`."""
    for collector in _targets():
        collector._connected(seconds, attempts, ok)


def token_minted() -> None:
    """A credential provider minted an RDS IAM token."""
    for collector in _targets():
        collector._count(minted=1)


def secret_read() -> None:
    """A credential provider read its secret from Secrets Manager."""
    for collector in _targets():
        collector._count(reads=1)

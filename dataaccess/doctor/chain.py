"""`diagnose`: walk the chain from the environment to a query; stop at the first broken link.

settings -> dns -> tcp -> tls -> credential -> login -> migrations -> privileges -> reader

Each link runs only when the ones before it held, so the first failure is the
one to fix; what it does not reach is listed as not run. The migrations come
before the privileges: a schema behind head explains missing grants, not the
other way round. Nothing here is cached or pooled: every call connects anew
and disposes what it opened, so a long-lived process (a warm Lambda, an API
worker) can call it without touching its own `Database`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..credentials import CredentialProvider, IamTokenProvider, provider_for
from ..settings import Settings, SettingsError
from .credential import obtain_credential
from .grants import app_role, reader_role
from .login import log_in, open_engine
from .network import Endpoint, connect_tcp, resolve
from .report import STEPS, Redactor, Report, Status, StepResult
from .schema import check_migrations, check_privileges
from .tls import check_tls

DEFAULT_READER_ROLE = "app_reader"  # migration 0006's default (DB_IAM_READER_USER)


def diagnose(
    environ: Mapping[str, str] | None = None, *, alembic_ini: str | Path | None = None
) -> Report:
    """Run the doctor on `environ` (default: os.environ) and return its report; never raises.

    `alembic_ini` locates the migration scripts to compare the database with
    (default: ALEMBIC_CONFIG, ./alembic.ini, the checkout's); without them the
    migrations step reports the revision found and skips the comparison.
    """
    env = os.environ if environ is None else environ
    walk = _Walk(env, alembic_ini)
    try:
        walk.run()
    except Exception as exc:  # a bug of the doctor's: report it in the step it broke
        step = STEPS[min(len(walk.results), len(STEPS) - 1)]
        walk.results.append(
            StepResult(
                step,
                Status.FAIL,
                f"the doctor itself failed: {type(exc).__name__}: {exc}",
                fix="This is a bug in dataaccess.doctor: report it with this output",
            )
        )
    return walk.redactor.report(walk.target, walk.results)


class _Walk:
    def __init__(self, env: Mapping[str, str], alembic_ini: str | Path | None) -> None:
        self.env = env
        self.alembic_ini = alembic_ini
        self.redactor = Redactor()
        self.results: list[StepResult] = []
        self.target: dict[str, Any] = {}
        self.user: str | None = None

    def add(self, result: StepResult) -> bool:
        """Record a result; True when the walk goes on."""
        self.results.append(result)
        return result.status is not Status.FAIL

    def run(self) -> None:
        try:
            settings = Settings.from_env(self.env)
        except SettingsError as exc:
            self.add(
                StepResult(
                    "settings",
                    Status.FAIL,
                    str(exc),
                    fix="Set the variable named above as docs/configuration.md says",
                )
            )
            return
        self.target.update(
            host=settings.host,
            port=settings.port,
            database=settings.name,
            user=settings.user,
            auth=settings.auth,
            reader_host=settings.reader_host,
        )
        self.add(_settings_result(settings))
        endpoint = self.network(settings, "DB_HOST", settings.host)
        if endpoint is None:
            return
        credential, provider = obtain_credential(settings, self.redactor)
        if not self.add(credential) or provider is None:
            return
        user = credential.details.get("user") or settings.user
        self.user = str(user) if user else None
        signed_host = provider.host if isinstance(provider, IamTokenProvider) else None
        engine = open_engine(settings, settings.host, provider)
        try:
            result, conn = log_in(
                "login",
                engine,
                settings,
                host=settings.host,
                user=self.user,
                signed_host=signed_host,
            )
            if not self.add(result) or conn is None:
                return
            with conn:
                if not self.add(check_migrations("migrations", conn, self.alembic_ini)):
                    return
                roles = [app_role(settings.iam_user)]
                reader = self.env.get("DB_IAM_READER_USER", "").strip() or DEFAULT_READER_ROLE
                if reader != settings.iam_user:
                    roles.append(reader_role(reader))
                if not self.add(check_privileges("privileges", conn, roles)):
                    return
        finally:
            engine.dispose()
        self.add(self.reader(settings, provider))

    def network(self, settings: Settings, label: str, host: str) -> Endpoint | None:
        """dns, tcp and tls for `host`, recorded as their own steps."""
        for result in _network_steps(settings, label, host, steps=("dns", "tcp", "tls")):
            if isinstance(result, Endpoint):
                return result
            if not self.add(result):
                return None
        return None

    def reader(self, settings: Settings, writer_credentials: CredentialProvider) -> StepResult:
        """The whole chain again for DB_READER_HOST, as one step, then: is it read-only?"""
        host = settings.reader_host
        if not host:
            return StepResult("reader", Status.SKIP, "DB_READER_HOST is not set")
        notes: list[str] = []
        for result in _network_steps(settings, "DB_READER_HOST", host, steps=("reader",) * 3):
            if isinstance(result, Endpoint):
                break
            if result.status is Status.FAIL:
                return _prefixed(result, host)
            if result.status is Status.WARN and result.fix:
                notes.append(result.fix)
        provider = writer_credentials
        if isinstance(writer_credentials, IamTokenProvider):
            # The reader signs for its own endpoint, as Database.from_settings does.
            provider = provider_for(settings, host)
            try:
                self.redactor.add(provider.get().password)
            except Exception as exc:  # botocore: the writer's token was minted moments ago
                return StepResult(
                    "reader", Status.FAIL, f"could not sign a token for {host}: {exc}"
                )
        engine = open_engine(settings, host, provider)
        try:
            result, conn = log_in(
                "reader",
                engine,
                settings,
                host=host,
                user=self.user,
                signed_host=host if isinstance(provider, IamTokenProvider) else None,
            )
            if conn is not None:
                conn.close()
        finally:
            engine.dispose()
        if result.status is Status.FAIL:
            return _prefixed(result, host)
        if result.details.get("in_recovery") or result.details.get("read_only"):
            return StepResult(
                "reader",
                Status.PASS,
                f"DB_READER_HOST={host} answers read-only: {result.summary}",
                notes=tuple(notes),
                details=result.details,
            )
        return StepResult(
            "reader",
            Status.FAIL,
            f"DB_READER_HOST={host} answers as a writer (not in recovery, "
            "transaction_read_only off)",
            fix="Set DB_READER_HOST to the cluster's reader endpoint (<name>.cluster-ro-<id>...), "
            "not its writer endpoint; if it is the reader endpoint, the cluster has no reader "
            "instance and the endpoint leads to the writer: add one, or unset DB_READER_HOST",
            notes=tuple(notes),
            details=result.details,
        )


def _network_steps(
    settings: Settings, label: str, host: str, *, steps: tuple[str, str, str]
) -> Any:
    """Yield the dns, tcp and tls results for `host`, then its Endpoint, or stop at a failure."""
    dns, tcp, tls = steps
    timeout = float(settings.connect_timeout)
    result, addresses = resolve(dns, label, host, settings.port, timeout)
    yield result
    if result.status is Status.FAIL:
        return
    result, endpoint = connect_tcp(tcp, host, addresses, settings.port, timeout)
    yield result
    if endpoint is None:
        return
    result = check_tls(tls, endpoint, settings)
    yield result
    if result.status is not Status.FAIL:
        yield endpoint


def _prefixed(result: StepResult, host: str) -> StepResult:
    return StepResult(
        "reader",
        result.status,
        f"DB_READER_HOST={host}: {result.summary}",
        fix=result.fix,
        notes=result.notes,
        details=result.details,
    )


def _settings_result(settings: Settings) -> StepResult:
    shown = {
        "DB_HOST": f"{settings.host}:{settings.port}",
        "DB_NAME": settings.name,
        "DB_USER": settings.user or "(from the secret)",
        "DB_AUTH": settings.auth,
        "DB_SSLMODE": settings.sslmode,
    }
    if settings.reader_host:
        shown["DB_READER_HOST"] = settings.reader_host
    if settings.iam_host:
        shown["DB_IAM_HOST"] = settings.iam_host
    if settings.proxy:
        shown["DB_PROXY"] = "true"
    summary = ", ".join(f"{name}={value}" for name, value in shown.items())
    summary += f"; connect timeout {settings.connect_timeout} s; runtime {settings.runtime}"
    details: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "database": settings.name,
        "user": settings.user,
        "auth": settings.auth,
        "region": settings.region,
        "secret_id": settings.secret_id,
        "reader_host": settings.reader_host,
        "iam_host": settings.iam_host,
        "proxy": settings.proxy,
        "sslmode": settings.sslmode,
        "sslrootcert": settings.sslrootcert,
        "connect_timeout": settings.connect_timeout,
        "runtime": settings.runtime,
    }
    return StepResult("settings", Status.PASS, summary, details=details)

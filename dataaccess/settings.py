"""Environment variables, read once into a typed, immutable settings object.

The variable names are a contract shared with the CloudFormation templates, the
deploy script and the tests; `ENV_VARS` lists every one of them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal, cast

from .timeouts import LIBPQ_MIN_CONNECT_TIMEOUT

AuthMode = Literal["iam", "secret", "password"]
# Who runs the process; it picks the connect-retry budget's default (see RUNTIME_BUDGETS).
Runtime = Literal["service", "lambda", "migration"]
AUTH_MODES: tuple[AuthMode, ...] = ("iam", "secret", "password")
SSL_MODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")

# Seconds a new connection may keep being retried (DB_CONNECT_RETRY_BUDGET) when
# unset. The API answers 503 + Retry-After rather than hold a worker thread through
# a failover; a Lambda invocation waits for a resuming cluster (the handler caps
# the wait by its remaining time); a migration waits for a restart to finish.
RUNTIME_BUDGETS: dict[Runtime, int] = {"service": 3, "lambda": 60, "migration": 300}
# The client waits this much longer than the statement timeout for an answer
# (DB_SOCKET_TIMEOUT's default), so the server's own timeout always fires first.
SOCKET_TIMEOUT_MARGIN = 5

# Every variable Settings.from_env reads, in the order docs/configuration.md documents them.
ENV_VARS: tuple[str, ...] = (
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_USER",
    "DB_AUTH",
    "DB_SECRET_ID",
    "DB_PASSWORD",
    "DB_REGION",
    "DB_READER_HOST",
    "DB_IAM_HOST",
    "DB_PROXY",
    "DB_SSLMODE",
    "DB_ALLOW_INSECURE_TLS",
    "DB_SSLROOTCERT",
    "DB_POOL_SIZE",
    "DB_MAX_OVERFLOW",
    "DB_POOL_RECYCLE",
    "DB_POOL_PRE_PING_IDLE",
    "DB_CONNECT_TIMEOUT",
    "DB_CONNECT_RETRY_BUDGET",
    "DB_KEEPALIVES_IDLE",
    "DB_KEEPALIVES_INTERVAL",
    "DB_KEEPALIVES_COUNT",
    "DB_STATEMENT_TIMEOUT_MS",
    "DB_SOCKET_TIMEOUT",
    "DB_APPLICATION_NAME",
    "DB_SECRET_TTL",
    "DB_SECRET_RETRY_WINDOW",
    "DB_IAM_USER",
)
# What to reach and how to log in: Settings.to_env writes these even at their default.
_LOGIN_FIELDS = frozenset({"host", "port", "name", "user", "auth", "sslmode"})
# A PostgreSQL role name kept boring: a letter, then ASCII letters, digits or underscores.
_ROLE_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,62}")


class SettingsError(ValueError):
    """A configuration variable is missing or invalid; the message names it."""


@dataclass(frozen=True, repr=False)
class Settings:
    """Connection settings for the writer (and optional reader) endpoint."""

    host: str
    name: str
    user: str | None = None
    port: int = 5432
    auth: AuthMode = "iam"
    secret_id: str | None = None
    password: str | None = None
    region: str | None = None
    reader_host: str | None = None
    iam_host: str | None = None
    # DB_HOST (and DB_READER_HOST) is an RDS Proxy endpoint: no startup options
    # (the proxy refuses them), nothing that pins (dataaccess/engine.py).
    proxy: bool = False
    sslmode: str = "verify-full"
    sslrootcert: str | None = None
    pool_size: int = 5
    max_overflow: int = 5
    pool_recycle: int = 1800
    pool_pre_ping_idle: int = 5
    connect_timeout: int = 5
    connect_retry_budget: int = RUNTIME_BUDGETS["service"]
    keepalives_idle: int = 10
    keepalives_interval: int = 3
    keepalives_count: int = 3
    statement_timeout_ms: int = 30_000
    socket_timeout: int = 30 + SOCKET_TIMEOUT_MARGIN
    application_name: str = "dataaccess"
    secret_ttl: int = 300
    secret_retry_window: int = 30
    iam_user: str = "app_iam"
    runtime: Runtime = "service"

    @property
    def in_lambda(self) -> bool:
        return self.runtime == "lambda"

    @property
    def dead_peer_seconds(self) -> int:
        """Worst case for noticing a peer that vanished without a reset (keepalives)."""
        return self.keepalives_idle + self.keepalives_interval * self.keepalives_count

    def __repr__(self) -> str:
        # Never show the password, even in a traceback or a debug log.
        shown = {k: v for k, v in self.__dict__.items() if k != "password"}
        shown["password"] = "***" if self.password else None
        return "Settings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"

    def to_env(self) -> dict[str, str]:
        """The DB_* variables from which Settings.from_env reads these settings back.

        `Settings.from_env(s.to_env(), runtime=s.runtime) == s`: the runtime is no DB_*
        variable (AWS_LAMBDA_FUNCTION_NAME or the caller picks it). Where and how to log
        in (DB_HOST, DB_PORT, DB_NAME, DB_USER, DB_AUTH, DB_SSLMODE) is always written;
        any other variable only when it is set and differs from from_env's default, so a
        process of another runtime keeps its own connect budget. DB_PASSWORD is written
        only for DB_AUTH=password, the one mode in which from_env reads it (a static
        password, for local use); for DB_AUTH=secret the secret's id is, never its value.
        """
        derived = {  # the defaults from_env derives from another setting
            "connect_retry_budget": RUNTIME_BUDGETS[self.runtime],
            "socket_timeout": _socket_timeout_default(self.statement_timeout_ms),
        }
        skipped = {"runtime"} if self.auth == "password" else {"runtime", "password"}
        env: dict[str, str] = {}
        for field in fields(self):
            value = getattr(self, field.name)
            if field.name in skipped or value is None:
                continue
            if field.name in _LOGIN_FIELDS or value != derived.get(field.name, field.default):
                text = str(value).lower() if isinstance(value, bool) else str(value)
                env[f"DB_{field.name.upper()}"] = text
        if self.sslmode != "verify-full":
            env["DB_ALLOW_INSECURE_TLS"] = "true"
        return {name: env[name] for name in ENV_VARS if name in env}  # in the documented order

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, *, runtime: Runtime | None = None
    ) -> Settings:
        """Read and validate the DB_* variables; raise SettingsError naming the bad one.

        `runtime` defaults to "lambda" under AWS_LAMBDA_FUNCTION_NAME, else "service";
        the migration environment passes "migration".
        """
        env = _Env(os.environ if environ is None else environ)
        auth = env.choice("DB_AUTH", AUTH_MODES, "iam")
        sslmode = env.choice("DB_SSLMODE", SSL_MODES, "verify-full")
        _check_tls(env, sslmode)
        if runtime is None:
            runtime = "lambda" if env.optional("AWS_LAMBDA_FUNCTION_NAME") else "service"
        proxy = env.flag("DB_PROXY")
        host = env.required("DB_HOST")
        reader_host = env.optional("DB_READER_HOST")
        iam_host = env.optional("DB_IAM_HOST")
        _check_proxy(proxy, runtime, host=host, reader_host=reader_host, iam_host=iam_host)
        statement_timeout_ms = env.integer("DB_STATEMENT_TIMEOUT_MS", 30_000, low=0)
        socket_default = _socket_timeout_default(statement_timeout_ms)
        return cls(
            host=host,
            name=env.required("DB_NAME"),
            user=env.required("DB_USER") if auth != "secret" else env.optional("DB_USER"),
            port=env.integer("DB_PORT", 5432, low=1, high=65535),
            auth=cast(AuthMode, auth),
            secret_id=env.required("DB_SECRET_ID") if auth == "secret" else None,
            password=env.required("DB_PASSWORD") if auth == "password" else None,
            region=_region(env, required=auth in ("iam", "secret")),
            reader_host=reader_host,
            iam_host=iam_host,
            proxy=proxy,
            sslmode=sslmode,
            sslrootcert=env.sslrootcert(required=sslmode in ("verify-ca", "verify-full")),
            pool_size=env.integer("DB_POOL_SIZE", 5, low=1, high=100),
            max_overflow=env.integer("DB_MAX_OVERFLOW", 5, low=0, high=100),
            pool_recycle=env.integer("DB_POOL_RECYCLE", 1800, low=-1, high=86_400),
            pool_pre_ping_idle=env.integer("DB_POOL_PRE_PING_IDLE", 5, low=0, high=3600),
            connect_timeout=env.integer(
                "DB_CONNECT_TIMEOUT", 5, low=LIBPQ_MIN_CONNECT_TIMEOUT, high=300
            ),
            connect_retry_budget=env.integer(
                "DB_CONNECT_RETRY_BUDGET", RUNTIME_BUDGETS[runtime], low=0, high=3600
            ),
            keepalives_idle=env.integer("DB_KEEPALIVES_IDLE", 10, low=1, high=7200),
            keepalives_interval=env.integer("DB_KEEPALIVES_INTERVAL", 3, low=1, high=600),
            keepalives_count=env.integer("DB_KEEPALIVES_COUNT", 3, low=1, high=100),
            statement_timeout_ms=statement_timeout_ms,
            socket_timeout=env.integer("DB_SOCKET_TIMEOUT", socket_default, low=0, high=86_400),
            application_name=env.text("DB_APPLICATION_NAME", "dataaccess", max_len=63),
            secret_ttl=env.integer("DB_SECRET_TTL", 300, low=0, high=86_400),
            secret_retry_window=env.integer("DB_SECRET_RETRY_WINDOW", 30, low=0, high=3600),
            iam_user=env.identifier("DB_IAM_USER", "app_iam"),
            runtime=runtime,
        )


def _socket_timeout_default(statement_timeout_ms: int) -> int:
    """DB_SOCKET_TIMEOUT's default: the statement timeout, rounded up, plus the margin.

    No statement timeout means no bound the client could safely add either.
    """
    if not statement_timeout_ms:
        return 0
    return -(-statement_timeout_ms // 1000) + SOCKET_TIMEOUT_MARGIN


def iam_login_role(environ: Mapping[str, str] | None = None) -> str:
    """DB_IAM_USER alone (default app_iam): what migrations need without a full Settings."""
    return _Env(os.environ if environ is None else environ).identifier("DB_IAM_USER", "app_iam")


# Set by the Lambda runtime (AWS_Lambda_python3.12) and by ECS (AWS_ECS_FARGATE, and the
# task metadata endpoint), never by a local emulation: where an unverified server is
# never acceptable.
_AWS_RUNTIME_MARKERS = ("AWS_EXECUTION_ENV", "ECS_CONTAINER_METADATA_URI_V4")


def _check_tls(env: _Env, sslmode: str) -> None:
    """Only verify-full checks that the server is the one named: anything less needs an
    explicit, local-only opt-in, so a typo or a copied .env cannot downgrade production."""
    if sslmode == "verify-full":
        return
    if not env.flag("DB_ALLOW_INSECURE_TLS"):
        raise SettingsError(
            f"DB_SSLMODE={sslmode} does not verify the server (only verify-full does); "
            "set DB_ALLOW_INSECURE_TLS=true for a local database"
        )
    running_in = [name for name in _AWS_RUNTIME_MARKERS if env.optional(name)]
    if running_in:
        raise SettingsError(
            f"DB_ALLOW_INSECURE_TLS is for local databases only; refused here ({running_in[0]} "
            "is set): use DB_SSLMODE=verify-full with the RDS CA bundle"
        )


# AWS's own endpoint names (a CNAME of one is not recognised, and needs none of this):
# <cluster>.cluster[-ro|-custom]-<id>.<region>.rds.amazonaws.com for Aurora, and
# <proxy>.proxy-<id>.<region>.rds.amazonaws.com (custom proxy endpoints:
# <name>.endpoint.proxy-<id>...) for RDS Proxy.
_AWS_DOMAIN = r"\.[a-z0-9-]+\.rds\.amazonaws\.com(?:\.cn)?\.?$"
_PROXY_ENDPOINT = re.compile(r"(?:^|\.)proxy-[a-z0-9]+" + _AWS_DOMAIN, re.IGNORECASE)
_CLUSTER_ENDPOINT = re.compile(r"\.cluster-(?:ro-|custom-)?[a-z0-9]+" + _AWS_DOMAIN, re.IGNORECASE)


def is_proxy_endpoint(host: str) -> bool:
    """`host` is an RDS Proxy endpoint by its AWS name (the default or a custom endpoint)."""
    return _PROXY_ENDPOINT.search(host) is not None


def _check_proxy(
    proxy: bool,
    runtime: Runtime,
    *,
    host: str,
    reader_host: str | None,
    iam_host: str | None,
) -> None:
    """Refuse, at start-up, what cannot work with (or without) RDS Proxy."""
    behind_proxy = [
        (name, value)
        for name, value in (("DB_HOST", host), ("DB_READER_HOST", reader_host))
        if value and is_proxy_endpoint(value)
    ]
    if runtime == "migration":
        # Migrations hold a session-level advisory lock and set lock_timeout for the
        # session (alembic/env.py): both would pin, and DDL wants the writer itself.
        if proxy:
            raise SettingsError(
                "DB_PROXY is for the application's connections: migrations connect to the "
                "cluster's writer endpoint; unset DB_PROXY for alembic"
            )
        if behind_proxy:
            name, value = behind_proxy[0]
            raise SettingsError(
                f"{name} is an RDS Proxy endpoint ({value}): migrations connect to the "
                "cluster's writer endpoint"
            )
        return
    if not proxy:
        if behind_proxy:
            name, value = behind_proxy[0]
            raise SettingsError(
                f"DB_PROXY must be true when {name} is an RDS Proxy endpoint ({value}): "
                "the proxy refuses the statement timeout sent at login otherwise"
            )
        return
    for name, signed in (("DB_HOST", host), ("DB_IAM_HOST", iam_host)):
        if signed and _CLUSTER_ENDPOINT.search(signed):
            raise SettingsError(
                f"DB_PROXY=true but {name} is an Aurora cluster endpoint ({signed}): set it "
                "to the proxy's endpoint, which its IAM tokens must be signed for"
            )


def _region(env: _Env, *, required: bool) -> str | None:
    region = env.optional("DB_REGION") or env.optional("AWS_REGION")
    if region is None:
        region = env.optional("AWS_DEFAULT_REGION")
    if required and region is None:
        raise SettingsError("DB_REGION is required for DB_AUTH=iam or secret (or set AWS_REGION)")
    return region


class _Env:
    """Typed reads of one environment mapping; every error names its variable."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ

    def optional(self, name: str) -> str | None:
        value = self._environ.get(name, "").strip()
        return value or None

    def required(self, name: str) -> str:
        value = self.optional(name)
        if value is None:
            raise SettingsError(f"{name} is required but not set")
        return value

    def text(self, name: str, default: str, *, max_len: int) -> str:
        value = self.optional(name) or default
        if len(value) > max_len:
            raise SettingsError(f"{name} must be at most {max_len} characters")
        return value

    def flag(self, name: str) -> bool:
        raw = (self.optional(name) or "false").lower()
        if raw not in ("true", "false", "1", "0", "yes", "no"):
            raise SettingsError(f"{name} must be true or false; got {raw!r}")
        return raw in ("true", "1", "yes")

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        value = (self.optional(name) or default).lower()
        if value not in allowed:
            raise SettingsError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        return value

    def integer(self, name: str, default: int, *, low: int = 0, high: int | None = None) -> int:
        raw = self.optional(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise SettingsError(f"{name} must be an integer; got {raw!r}") from None
        if value < low or (high is not None and value > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise SettingsError(f"{name} must be {bound}; got {value}")
        return value

    def identifier(self, name: str, default: str) -> str:
        value = self.optional(name) or default
        # Role names end up in DDL (quoted), but keep them boring so they
        # survive every tool that handles them unquoted (the migrations check
        # the same rule).
        if not _ROLE_NAME.fullmatch(value):
            raise SettingsError(
                f"{name} must be a PostgreSQL role name: a letter, then letters, digits "
                f"or underscores, at most 63 characters; got {value!r}"
            )
        return value

    def sslrootcert(self, *, required: bool) -> str | None:
        value = self.optional("DB_SSLROOTCERT")
        if value is None:
            if required:
                raise SettingsError(
                    "DB_SSLROOTCERT is required when DB_SSLMODE is verify-ca or verify-full "
                    "(path to the RDS CA bundle)"
                )
            return None
        if not Path(value).is_file():
            raise SettingsError(f"DB_SSLROOTCERT names a file that does not exist: {value}")
        return value

"""The login link: the package's own engine logs in once, and a refusal is explained.

The engine is `dataaccess.create_engine` itself (the same `do_connect`, TLS
parameters and `target_session_attrs`), with no connect retries and no pool:
the doctor wants the first answer, not the budget's last.
"""

from __future__ import annotations

import re
from dataclasses import replace

import psycopg2
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..credentials import CredentialProvider
from ..engine import create_engine
from ..resilience import is_auth_failure
from ..settings import Settings
from .iam import iam_login_hint
from .report import Status, StepResult

FACTS = sa.text(
    "SELECT current_user AS user_name, current_setting('server_version') AS server_version, "
    "pg_is_in_recovery() AS in_recovery, "
    "current_setting('transaction_read_only') AS read_only, "
    "(SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()) AS tls"
)

# (pattern in libpq's message, what it means, what to change); the first match wins.
_CAUSES: tuple[tuple[str, str, str], ...] = (
    (
        r'database ".*" does not exist',
        "the database named by DB_NAME does not exist on this server",
        "Set DB_NAME to the cluster's database (DatabaseName in cfn/aurora.yaml)",
    ),
    (
        r'role ".*" does not exist',
        "there is no such role on this server",
        "Set DB_USER to the IAM login role the migrations create (DB_IAM_USER, app_iam), "
        "or run the migrations",
    ),
    (
        r"no pg_hba\.conf entry",
        "the server does not admit this client, user and database (pg_hba.conf)",
        "If the message says no encryption, the server requires TLS (rds.force_ssl): set "
        "DB_SSLMODE=verify-full with DB_SSLROOTCERT; otherwise check the user and database",
    ),
    (
        r"is not permitted to log in",
        "the role exists but has NOLOGIN",
        "As the master user: ALTER ROLE {user} LOGIN (migration 0002 creates it with LOGIN)",
    ),
    (
        r"permission denied for database|does not have connect privilege",
        "the role may not connect to this database",
        "As the master user: GRANT CONNECT ON DATABASE {database} TO {user} (migrations 0002 "
        "and 0005 grant it)",
    ),
    (
        r"session is read-only|server is in hot standby mode",
        "DB_HOST leads to a read-only server",
        "Set DB_HOST to the cluster (writer) endpoint, not the reader endpoint or a replica's "
        "instance endpoint; during a failover, re-run in a minute",
    ),
    (
        r"too many clients|remaining connection slots",
        "the server has no connection slot left",
        "Lower DB_POOL_SIZE + DB_MAX_OVERFLOW times the tasks and functions, raise the "
        "cluster's capacity (max_connections), or put RDS Proxy in front",
    ),
    (
        r"starting up|shutting down|in recovery mode|not (yet )?accepting connections",
        "the server is restarting, failing over or resuming from 0 ACU",
        "Re-run in a minute; if it persists, check the cluster's events (aws rds describe-events)",
    ),
    (
        r"timeout expired|timed out",
        "the server accepted TCP but the login did not finish within DB_CONNECT_TIMEOUT",
        "The server is overloaded or resuming from 0 ACU: re-run, or raise DB_CONNECT_TIMEOUT",
    ),
    (
        r"certificate|sslmode|ssl error",
        "libpq refused the server's TLS",
        "Check DB_SSLROOTCERT and DB_SSLMODE (the tls step above verified with the same files)",
    ),
)


def open_engine(settings: Settings, host: str, provider: CredentialProvider) -> Engine:
    """The package's engine for `host`, one connect attempt, no pool."""
    return create_engine(
        replace(settings, connect_retry_budget=0),
        host=host,
        credentials=provider,
        poolclass=sa.NullPool,
    )


def log_in(
    step: str,
    engine: Engine,
    settings: Settings,
    *,
    host: str,
    user: str | None,
    signed_host: str | None = None,
) -> tuple[StepResult, Connection | None]:
    """Connect and read who and where we are; on a refusal, say why it was refused."""
    try:
        conn = engine.connect()
        facts = conn.execute(FACTS).mappings().one()
        conn.rollback()
    except sa.exc.DBAPIError as exc:
        failure = explain_failure(
            step, str(exc.orig), settings, host=host, user=user, signed_host=signed_host
        )
        return failure, None
    role = "read-only" if facts["in_recovery"] or facts["read_only"] == "on" else "read-write"
    tls = "over TLS" if facts["tls"] else "WITHOUT TLS"
    summary = (
        f"logged in to {host} as {facts['user_name']} on PostgreSQL "
        f"{facts['server_version']}, a {role} server, {tls}"
    )
    details = {
        "user": facts["user_name"],
        "server_version": facts["server_version"],
        "in_recovery": bool(facts["in_recovery"]),
        "read_only": facts["read_only"] == "on",
        "tls": bool(facts["tls"]),
    }
    return StepResult(step, Status.PASS, summary, details=details), conn


def explain_failure(
    step: str,
    message: str,
    settings: Settings,
    *,
    host: str,
    user: str | None = None,
    signed_host: str | None = None,
) -> StepResult:
    """What a refused login means, from libpq's message (the only thing a refusal carries).

    `signed_host` is the host IAM tokens were signed for (DB_IAM_HOST, else `host`).
    """
    message = " ".join(message.split())
    user = user or settings.user or "the secret's user"
    if is_auth_failure(psycopg2.OperationalError(message)):
        return _auth_failure(step, message, settings, user, signed_host or host)
    for pattern, meaning, fix in _CAUSES:
        if re.search(pattern, message, re.IGNORECASE):
            return StepResult(
                step,
                Status.FAIL,
                f"{meaning}: {message}",
                fix=fix.format(user=user, database=settings.name),
            )
    return StepResult(
        step,
        Status.FAIL,
        f"the login failed: {message}",
        fix="Read the server's message above; the steps before this one passed",
    )


def _auth_failure(
    step: str, message: str, settings: Settings, user: str, signed_host: str
) -> StepResult:
    if settings.auth == "iam":
        hint = iam_login_hint(settings, signed_host, user)
        notes = list(hint.notes)
        if "PAM authentication failed" not in message:
            notes.insert(
                0,
                f"the server checked a password, not an IAM token: on RDS that means {user} "
                "is not a member of rds_iam; a PostgreSQL outside RDS never accepts IAM tokens",
            )
        return StepResult(
            step,
            Status.FAIL,
            f"the server refused the IAM token for {user}: {message}",
            fix=hint.fix,
            notes=tuple(notes),
            details=hint.details,
        )
    if settings.auth == "secret":
        return StepResult(
            step,
            Status.FAIL,
            f"the server refused the password of secret {settings.secret_id}: {message}",
            fix="The secret's password is not the role's: a rotation may be under way (re-run "
            "in a minute) or may have stopped halfway; compare the secret's AWSCURRENT and "
            "AWSPENDING versions with the database",
        )
    return StepResult(
        step,
        Status.FAIL,
        f"the server refused DB_PASSWORD for {user}: {message}",
        fix=f"DB_PASSWORD is not {user}'s password, or there is no role {user}: set the right "
        f"password, or reset it as the master user (ALTER ROLE {user} PASSWORD ...)",
    )

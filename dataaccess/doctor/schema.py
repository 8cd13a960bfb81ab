"""The schema links of the chain: the migrations are at head, and the login roles hold
exactly what the migrations grant them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .grants import Expected, Problem, check_role
from .report import Status, StepResult

VERSIONS = sa.text("SELECT version_num FROM alembic_version")
_MAX_NOTES = 20


def find_alembic_ini(explicit: str | Path | None = None) -> Path | None:
    """The given path, else ALEMBIC_CONFIG, else ./alembic.ini, else the checkout's."""
    if explicit is not None:
        return Path(explicit)
    candidates = [os.environ.get("ALEMBIC_CONFIG"), "alembic.ini"]
    # An editable install (a checkout): the repository root holds alembic.ini.
    candidates.append(str(Path(__file__).resolve().parents[2] / "alembic.ini"))
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def load_scripts(alembic_ini: str | Path | None) -> tuple[Any | None, str]:
    """(the ScriptDirectory, where it is) or (None, why there is none here)."""
    try:
        from alembic.config import Config
        from alembic.script import ScriptDirectory
    except ImportError:
        return None, "alembic is not installed here (the Lambda zip leaves it out)"
    path = find_alembic_ini(alembic_ini)
    if path is None or not path.is_file():
        return None, "no alembic.ini here (pass --alembic-ini, or run where alembic.ini is)"
    try:
        script = ScriptDirectory.from_config(Config(str(path)))
        script.get_heads()
    except Exception as exc:  # any unreadable script directory: say so and compare nothing
        return None, f"the migration scripts of {path} could not be read: {exc}"
    return script, str(path.resolve())


def check_migrations(step: str, conn: Connection, alembic_ini: str | Path | None) -> StepResult:
    """alembic_version against the script directory's head, when both can be read."""
    try:
        found = sorted(conn.execute(VERSIONS).scalars())
    except sa.exc.DBAPIError as exc:
        conn.rollback()
        code = getattr(exc.orig, "pgcode", None)
        user = conn.execute(sa.text("SELECT current_user")).scalar_one()
        conn.rollback()
        if code == "42501":  # insufficient_privilege
            return StepResult(
                step,
                Status.SKIP,
                f"cannot compare: {user} may not read alembic_version (by design, the "
                "migrations give the login roles nothing on it); run the doctor with the "
                "migration task's credentials to compare",
            )
        if code == "42P01":  # undefined_table
            return StepResult(
                step,
                Status.FAIL,
                "there is no alembic_version table: this database was never migrated",
                fix="Run the migration task (alembic upgrade head with the master secret) "
                "before the service and the functions: scripts/deploy.sh does",
            )
        return StepResult(step, Status.FAIL, f"could not read alembic_version: {exc.orig}")
    conn.rollback()
    if not found:
        return StepResult(
            step,
            Status.FAIL,
            "alembic_version is empty: the migrations never completed here",
            fix="Run the migration task (alembic upgrade head)",
        )
    shown = ", ".join(found)
    script, where = load_scripts(alembic_ini)
    if script is None:
        return StepResult(
            step,
            Status.SKIP,
            f"the database is at {shown}; cannot compare: {where}",
            details={"revisions": found},
        )
    heads = sorted(script.get_heads())
    details: dict[str, Any] = {"revisions": found, "heads": heads, "scripts": where}
    if found == heads:
        return StepResult(step, Status.PASS, f"at head {shown} ({where})", details=details)
    ordered = [revision.revision for revision in script.walk_revisions()]  # head first
    unknown = [revision for revision in found if revision not in ordered]
    if unknown:
        return StepResult(
            step,
            Status.WARN,
            f"the database is at {shown}, which these scripts (head {', '.join(heads)}) do "
            "not know: it was migrated by a newer release",
            fix="Deploy the image that matches the schema; this code runs against a schema "
            "newer than its own",
            details=details,
        )
    pending = _pending(ordered, found)
    return StepResult(
        step,
        Status.FAIL,
        f"the database is at {shown}, {len(pending)} revision(s) behind head "
        f"{', '.join(heads)} (pending: {', '.join(pending)})",
        fix="Run the migration task (alembic upgrade head with the master secret) before the "
        "service and the functions use this code: scripts/deploy.sh does",
        details={**details, "pending": pending},
    )


def _pending(ordered: Sequence[str], found: Sequence[str]) -> list[str]:
    """Revisions newer than every one found, oldest first (a linear history)."""
    newest = min(ordered.index(revision) for revision in found)
    return list(reversed(ordered[:newest]))


def check_privileges(step: str, conn: Connection, roles: Sequence[Expected]) -> StepResult:
    """Each login role against the grants of migrations 0002-0006."""
    problems: list[Problem] = []
    try:
        for expected in roles:
            problems += check_role(conn, expected)
    except sa.exc.DBAPIError as exc:
        return StepResult(step, Status.FAIL, f"could not read the roles' privileges: {exc.orig}")
    finally:
        conn.rollback()
    names = " and ".join(expected.role for expected in roles)
    if not problems:
        return StepResult(
            step,
            Status.PASS,
            f"{names} hold what the migrations grant them, and nothing they withhold",
            details={"roles": [expected.role for expected in roles]},
        )
    first = problems[0]
    notes = [f"{p.text}: {p.statement}" for p in problems[1:_MAX_NOTES]]
    if len(problems) > _MAX_NOTES:
        notes.append(f"... and {len(problems) - _MAX_NOTES} more")
    return StepResult(
        step,
        Status.FAIL,
        f"{first.text} ({len(problems)} difference(s) from the migrations' grants)",
        fix="Run the migrations (alembic upgrade head); if they are at head already, someone "
        f"changed the grants by hand: as the master user, {first.statement}",
        notes=tuple(notes),
        details={"problems": [p.text for p in problems]},
    )

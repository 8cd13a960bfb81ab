"""The doctor's verdicts: one typed result per step, a report, and how both are shown.

A report is what `diagnose` returns and what the CLI prints (as text, or as
JSON with `--json`). Every text in it has passed through `Redactor` first: the
steps handle passwords and IAM tokens, and none of them may reach an operator's
terminal, a log or a Lambda response.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import TypedDict

# The chain, in the order it is walked: each step needs the ones before it.
STEPS: tuple[str, ...] = (
    "settings",
    "dns",
    "tcp",
    "tls",
    "credential",
    "login",
    "migrations",
    "privileges",
    "reader",
)
EXIT_OK = 0
EXIT_INTERNAL = 1  # the doctor itself broke: a bug to report, not a diagnosis
EXIT_USAGE = 2  # argparse's own code for a bad command line
# A failed step exits with its own code, so a script can tell which link broke.
EXIT_CODES: dict[str, int] = {step: 3 + index for index, step in enumerate(STEPS)}

Detail = str | int | float | bool | None | list[str]


class StepJson(TypedDict):
    step: str
    status: str
    summary: str
    fix: str | None
    notes: list[str]
    details: dict[str, Detail]


class DoctorJson(TypedDict):
    ok: bool
    exit_code: int
    failed_step: str | None
    target: dict[str, Detail]
    steps: list[StepJson]
    not_run: list[str]


class Status(StrEnum):
    """A step's verdict. Only FAIL stops the walk; WARN passes with something to look at."""

    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    WARN = "warn"
    SKIP = "skip"
    FAIL = "fail"


_MARKS = {Status.PASS: "ok", Status.WARN: "warn", Status.SKIP: "skip", Status.FAIL: "FAIL"}


@dataclass(frozen=True)
class StepResult:
    """What one step found (`summary`), and for a failure or warning what to change (`fix`)."""

    step: str
    status: Status
    summary: str
    fix: str | None = None
    notes: tuple[str, ...] = ()
    details: Mapping[str, Detail] = field(default_factory=dict)

    def as_dict(self) -> StepJson:
        return {
            "step": self.step,
            "status": str(self.status),
            "summary": self.summary,
            "fix": self.fix,
            "notes": list(self.notes),
            "details": dict(self.details),
        }


@dataclass(frozen=True)
class Report:
    """The steps that ran, in order; the walk stops after the first failure."""

    target: Mapping[str, Detail]
    steps: tuple[StepResult, ...]

    @property
    def failed(self) -> StepResult | None:
        return next((s for s in self.steps if s.status is Status.FAIL), None)

    @property
    def ok(self) -> bool:
        return self.failed is None

    @property
    def exit_code(self) -> int:
        failed = self.failed
        return EXIT_OK if failed is None else EXIT_CODES[failed.step]

    @property
    def not_run(self) -> tuple[str, ...]:
        ran = {s.step for s in self.steps}
        return tuple(step for step in STEPS if step not in ran)

    def step(self, name: str) -> StepResult | None:
        return next((s for s in self.steps if s.step == name), None)

    def as_dict(self) -> DoctorJson:
        """JSON-ready: what `--json` prints and what a Lambda entry point returns."""
        failed = self.failed
        return {
            "ok": self.ok,
            "exit_code": self.exit_code,
            "failed_step": failed.step if failed else None,
            "target": dict(self.target),
            "steps": [s.as_dict() for s in self.steps],
            "not_run": list(self.not_run),
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def render(self) -> str:
        """One line per step with its mark; a failure or warning adds its fix and notes."""
        target = self.target
        head = "dataaccess doctor"
        if target.get("host"):
            head += (
                f": {target.get('user') or '(user from the secret)'}@{target['host']}:"
                f"{target.get('port')}/{target.get('database')} (DB_AUTH={target.get('auth')})"
            )
        lines = [head]
        for result in self.steps:
            lines.append(f"  {_MARKS[result.status]:<5} {result.step:<11} {result.summary}")
            if result.fix:
                lines.append(f"  {'':<5} {'':<11} fix: {result.fix}")
            lines.extend(f"  {'':<5} {'':<11} note: {note}" for note in result.notes)
        if self.not_run:
            lines.append(f"  {'-':<5} {'not run':<11} {', '.join(self.not_run)}")
        failed = self.failed
        if failed is None:
            counts = {status: sum(s.status is status for s in self.steps) for status in Status}
            tally = f"{counts[Status.PASS]} ok"
            tally += f", {counts[Status.WARN]} warning(s)" if counts[Status.WARN] else ""
            tally += f", {counts[Status.SKIP]} skipped" if counts[Status.SKIP] else ""
            lines.append(f"all checks passed ({tally})")
        else:
            lines.append(f"FAILED at {failed.step} (exit status {self.exit_code})")
        return "\n".join(lines)


# Whatever slips into an error message: a presigned token's signature and session
# token, or a "password=..." of a connection string.
_PATTERNS = (
    re.compile(r"(X-Amz-Signature=)[^&\s\"']+"),
    re.compile(r"(X-Amz-Security-Token=)[^&\s\"']+"),
    re.compile(r"(?i)(password\s*[=:]\s*)[^\s,;\"')]+"),
)


class Redactor:
    """Replaces every secret the steps handled (and anything shaped like one) with ***."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def add(self, secret: str | None) -> None:
        if secret:
            self._secrets.add(secret)

    def text(self, value: str) -> str:
        # Longest first: a token that contains a password is hidden whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            value = value.replace(secret, "***")
        for pattern in _PATTERNS:
            value = pattern.sub(r"\1***", value)
        return value

    def detail(self, value: Detail) -> Detail:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, list):
            return [self.text(item) for item in value]
        return value

    def result(self, result: StepResult) -> StepResult:
        return replace(
            result,
            summary=self.text(result.summary),
            fix=self.text(result.fix) if result.fix is not None else None,
            notes=tuple(self.text(note) for note in result.notes),
            details={key: self.detail(value) for key, value in result.details.items()},
        )

    def report(self, target: Mapping[str, Detail], steps: Iterable[StepResult]) -> Report:
        return Report(
            target={key: self.detail(value) for key, value in target.items()},
            steps=tuple(self.result(step) for step in steps),
        )

"""One drill's outcome: the figures for docs/RELIABILITY.md and the checks that must hold."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DrillResult:
    key: str
    drill: str
    load: str
    fault: str
    requests: int = 0  # API requests and Lambda invocations made during the drill
    refused: int = 0  # of which answered 503 (or reported as batch item failures)
    lost: int = 0  # acknowledged orders or events missing afterwards
    recovery_s: float | None = None  # fault over -> first success
    checks: dict[str, bool] = field(default_factory=dict)  # what must hold -> held
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(self.checks.values()) and self.lost == 0

    def failed_checks(self) -> list[str]:
        failed = [name for name, held in self.checks.items() if not held]
        if self.lost:
            failed.append(f"{self.lost} acknowledged writes lost")
        return failed

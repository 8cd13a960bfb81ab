"""D8: no password, token or secret value handed out by a stage appears in any of its logs."""

from __future__ import annotations

from dataclasses import dataclass, field

from drills.result import DrillResult
from drills.stage import Stage


@dataclass
class LeakScan:
    """What the stages' logs said, gathered before each stage is torn down."""

    files: int = 0
    bytes: int = 0
    secrets: int = 0
    leaks: dict[str, int] = field(default_factory=dict)  # log file name -> occurrences

    def add(self, st: Stage) -> None:
        values = [v for v in st.secrets if len(v) >= 8]  # short strings match by chance
        self.secrets += len(values)
        for path in st.logs:
            if not path.exists():
                continue
            text = path.read_text(errors="replace")
            self.files += 1
            self.bytes += len(text)
            found = sum(text.count(value) for value in values)
            if found:
                self.leaks[path.name] = self.leaks.get(path.name, 0) + found


def d8_secrets(scan: LeakScan) -> DrillResult:
    result = DrillResult(
        "D8",
        "secrets stay secret",
        "the logs of the drills above",
        "—",
        requests=scan.files,
    )
    result.checks["logs were captured"] = scan.files > 0 and scan.bytes > 0
    result.checks["0 occurrences of any password, token or secret value"] = not scan.leaks
    result.notes.append(
        f"{scan.secrets} values searched for in {scan.files} log files ({scan.bytes:,} characters)"
    )
    result.notes.extend(f"leaked in {name}: {n}" for name, n in sorted(scan.leaks.items()))
    return result

"""`python -m dataaccess doctor`: what is wrong with a deployment's database access, and
what to change.

The doctor walks the chain from the environment to a query (settings, DNS, TCP,
TLS, credential, login, migrations, privileges, reader endpoint), stops at the
first broken link and says what to fix, in one sentence. `diagnose()` is the
library entry point the CLI, a Lambda handler or an ECS one-off task call:

    from dataaccess.doctor import diagnose
    report = diagnose()          # os.environ; never raises
    report.ok, report.exit_code  # True / 0 when every step passed or was skipped
    report.as_dict()             # JSON-ready: what `--json` prints
    print(report.render())       # one line per step

Exit codes are in `EXIT_CODES` (one per step) and docs/infrastructure.md.
"""

from .chain import diagnose
from .report import (
    EXIT_CODES,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    STEPS,
    DoctorJson,
    Report,
    Status,
    StepResult,
)

__all__ = [
    "EXIT_CODES",
    "EXIT_INTERNAL",
    "EXIT_OK",
    "EXIT_USAGE",
    "STEPS",
    "DoctorJson",
    "Report",
    "Status",
    "StepResult",
    "diagnose",
]

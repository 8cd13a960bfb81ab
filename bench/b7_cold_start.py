"""B7: a cold start, import plus first invocation with its first IAM login, vs a minimal handler.

Each sample is a fresh interpreter, as a new Lambda execution environment is: it
imports the handler module and calls it once with a 3-record batch of new events,
which signs an IAM token, opens the TLS connection through a local stand-in for
RDS's IAM authentication (scripts/localiam: it checks the token's SigV4 signature,
then logs in to the bench cluster) and commits. Bytecode is cached, as in the zip
(scripts/package_lambda.py precompiles it): PYTHONPYCACHEPREFIX points at a
directory of this run, filled by the warm-up, since this machine may set
PYTHONDONTWRITEBYTECODE.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

from scripts.localiam import OTHER_AWS_CREDENTIALS, IamKey, LocalIamEndpoint, cluster_tls

from .harness import BENCH_ROLE, PRODUCTS, BenchDB, Row, Sizes, median, rotate, sku

REPO = Path(__file__).resolve().parent.parent
REGION = "eu-west-1"
RECORDS = 3

# The child: time the import and the first invocation from its own first line, so the
# interpreter's start (the same on both sides, and the Lambda runtime's own) is left out.
_CHILD = """
import json, sys, time
started = time.perf_counter()
sys.path[:0] = {paths!r}
import {module} as function
imported = time.perf_counter()

class Context:
    function_name = "cold-start"
    memory_limit_in_mb = 256
    invoked_function_arn = "arn:aws:lambda:{region}:123456789012:function:cold-start"
    aws_request_id = "b7"
    def get_remaining_time_in_millis(self):
        return 60_000

result = function.{entry}(json.loads(sys.argv[1]), Context())
done = time.perf_counter()
print("B7 " + json.dumps({{
    "import": imported - started, "invoke": done - imported,
    "failures": len(result["batchItemFailures"]),
    "orm": "sqlalchemy.orm" in sys.modules,
}}))
"""

SIDES = {
    "ours": ("handler", "stock_events_handler"),
    "baseline": ("bench.cold_baseline", "handler"),
    "core": ("bench.cold_core", "handler"),  # the baseline on SQLAlchemy Core: the floor
}


def sqs_event(prefix: str, offset: int) -> dict[str, Any]:
    """A batch of new events: both sides apply them, none is a duplicate."""
    return {
        "Records": [
            {
                "messageId": f"{prefix}-{i}",
                "receiptHandle": f"rh-{i}",
                "body": json.dumps(
                    {
                        "event_id": f"{prefix}-{i}",
                        "sku": sku((offset + i) % PRODUCTS),
                        "delta": 1,
                        "reason": "restock",
                        "occurred_at": "2026-01-01T00:00:00Z",
                    }
                ),
                "attributes": {"ApproximateReceiveCount": "1"},
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": f"arn:aws:sqs:{REGION}:123456789012:stock-events",
                "awsRegion": REGION,
            }
            for i in range(RECORDS)
        ]
    }


class ColdStarts:
    """Fresh interpreters for one side, against the IAM endpoint; `tree` is the checkout
    whose lambda/ and dataaccess/ "ours" runs (another tree measures a change)."""

    def __init__(
        self, env: dict[str, str], workdir: Path, tree: Path = REPO, importtime: bool = False
    ) -> None:
        self.env, self.workdir, self.tree = env, workdir, tree
        self.importtime = importtime
        self.samples: dict[str, list[dict[str, float]]] = defaultdict(list)
        self.runs = 0  # child processes started, each one cold start and one IAM login

    def command(self, side: str, *, importtime: bool = False) -> list[str]:
        module, entry = SIDES[side]
        paths = [str(self.tree / "lambda"), str(self.tree)] if side == "ours" else [str(REPO)]
        code = _CHILD.format(paths=paths, module=module, entry=entry, region=REGION)
        return [sys.executable, *(["-X", "importtime"] if importtime else []), "-c", code]

    def run_once(self, side: str, *, importtime: bool = False) -> subprocess.CompletedProcess[str]:
        self.runs += 1
        event = sqs_event(f"b7-{side}-{time.time_ns()}", self.runs * RECORDS)
        started = time.perf_counter()
        out = subprocess.run(
            [*self.command(side, importtime=importtime), json.dumps(event)],
            cwd=self.workdir,
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        wall = time.perf_counter() - started
        if out.returncode != 0:
            raise RuntimeError(f"B7 {side} failed:\n{out.stderr[-3000:]}")
        lines = [line for line in out.stdout.splitlines() if line.startswith("B7 ")]
        result = json.loads(lines[-1][3:])
        if result["failures"]:
            raise RuntimeError(f"B7 {side}: {result['failures']} records failed:\n{out.stdout}")
        if not importtime:
            self.samples[side].append({**result, "wall": wall})
        return out

    def side(self, name: str) -> Any:
        def go(n: int) -> list[float]:
            first = len(self.samples[name])
            for _ in range(n):
                self.run_once(name)
            return [s["import"] + s["invoke"] for s in self.samples[name][first:]]

        return go


def import_costs(stderr: str, top: int = 8) -> tuple[float, list[tuple[str, float]]]:
    """From `python -X importtime`: the whole import of the handler module (ms), and the
    self time summed per top-level package (ms), largest first."""
    per_package: dict[str, float] = defaultdict(float)
    total = 0.0
    started = False  # the interpreter's own start-up imports end with `site`
    for line in stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( +)(\S+)$", line)
        if match is None:
            continue
        self_us, cumulative_us, indent, name = match.groups()
        top_level = len(indent) == 1
        if not started:
            started = top_level and name == "site"
            continue
        per_package[name.split(".")[0]] += int(self_us) / 1000
        if top_level:
            total += int(cumulative_us) / 1000  # json, sys, time and the handler module
    ranked = sorted(per_package.items(), key=lambda item: -item[1])
    return total, ranked[:top]


def child_env(bdb: BenchDB, endpoint: LocalIamEndpoint, key: IamKey, pycache: Path) -> dict:
    """A deployed function's environment (DB_AUTH=iam through the endpoint), bytecode cached."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in OTHER_AWS_CREDENTIALS
        and not k.startswith(("DB_", "POWERTOOLS_", "LAMBDA_", "_X_AMZN"))
        and k != "PYTHONDONTWRITEBYTECODE"
    }
    # The endpoint presents the cluster's certificate: the same TLS settings hold.
    tokens = replace(
        bdb.app_settings(),
        host=endpoint.host,
        port=endpoint.port,
        auth="iam",
        password=None,
        region=REGION,
    )
    return {
        **env,
        **key.env(),
        "PYTHONPYCACHEPREFIX": str(pycache),
        "PYTHONPATH": "",
        "AWS_REGION": REGION,
        "AWS_LAMBDA_FUNCTION_NAME": "cold-start",
        "POWERTOOLS_SERVICE_NAME": "stock-events",
        # No INFO lines on either side: the baseline writes none.
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "LOG_LEVEL": "WARNING",
        **tokens.to_env(),
    }


def iam_endpoint(bdb: BenchDB, key: IamKey) -> LocalIamEndpoint:
    """The stand-in RDS endpoint: a valid token for BENCH_ROLE logs in as it."""
    return LocalIamEndpoint(
        upstream=(bdb.host, bdb.port),
        logins={BENCH_ROLE: bdb.app_password},
        keys=[key],
        region=REGION,
        tls=cluster_tls(bdb.ca_file),
    ).start()


def run(bdb: BenchDB, sizes: Sizes) -> Row:
    key = IamKey.generate(db_users=frozenset({BENCH_ROLE}))
    with (
        tempfile.TemporaryDirectory(prefix="b7-") as tmp,
        iam_endpoint(bdb, key) as endpoint,
    ):
        workdir = Path(tmp)
        starts = ColdStarts(child_env(bdb, endpoint, key, workdir / "pycache"), workdir)
        ours, base, core = rotate(
            [starts.side("ours"), starts.side("baseline"), starts.side("core")],
            total=sizes.cold_starts,
            rounds=sizes.rounds,
        )
        ours_costs = import_costs(starts.run_once("ours", importtime=True).stderr)
        base_costs = import_costs(starts.run_once("baseline", importtime=True).stderr)
        accepted = endpoint.accepted
    return row(starts, ours, base, core, ours_costs, base_costs, accepted)


def row(
    starts: ColdStarts,
    ours: list[float],
    base: list[float],
    core: list[float],
    ours_costs: tuple[float, list[tuple[str, float]]],
    base_costs: tuple[float, list[tuple[str, float]]],
    logins: int,
) -> Row:
    measured = {"ours": len(ours), "baseline": len(base), "core": len(core)}

    def part(side: str, key: str) -> float:
        """The median of one part of the measured samples (after the warm-up), in ms."""
        return median([s[key] for s in starts.samples[side][-measured[side] :]]) * 1e3

    ours_ms, base_ms, core_ms = median(ours) * 1e3, median(base) * 1e3, median(core) * 1e3
    ours_orm = any(s["orm"] for s in starts.samples["ours"])
    costs = ", ".join(f"{name} {ms:.0f}" for name, ms in ours_costs[1])
    base_list = ", ".join(f"{name} {ms:.0f}" for name, ms in base_costs[1][:5])
    return Row(
        key="B7",
        workload=f"Lambda cold start: import + first invocation ({RECORDS} new events, "
        f"first IAM login), {len(ours)} fresh interpreters per side",
        ours=ours_ms,
        baseline=base_ms,
        unit="ms per cold start, median",
        goal="time ratio ≤ 1.3; `-X importtime` top costs reported",
        better="lower",
        limit=1.3,
        notes=[
            f"ours: import {part('ours', 'import'):.0f} ms + first invocation "
            f"{part('ours', 'invoke'):.0f} ms; baseline: import {part('baseline', 'import'):.0f}"
            f" ms + first invocation {part('baseline', 'invoke'):.0f} ms (medians). A whole "
            f"child process, interpreter start and exit included: ours "
            f"{part('ours', 'wall'):.0f} ms, baseline {part('baseline', 'wall'):.0f} ms.",
            f"the floor, the baseline's handler on a SQLAlchemy Core engine (bench/cold_core.py, "
            f"the third side of the rotation): {core_ms:.0f} ms (ratio {core_ms / base_ms:.2f}), "
            f"of which import {part('core', 'import'):.0f} ms. What ours adds to SQLAlchemy's own "
            f"cost: {ours_ms - core_ms:.0f} ms (ours/floor {ours_ms / core_ms:.2f}).",
            f"`python -X importtime`, ours: the handler's imports {ours_costs[0]:.0f} ms; "
            f"self time by top-level package (ms): {costs}. Baseline {base_costs[0]:.0f} ms: "
            f"{base_list}.",
            "ours: `lambda/handler.py`'s `stock_events_handler` as deployed: Powertools logger "
            "and metrics, `Settings.from_env`, the engine built on first use, an IAM token "
            "signed (botocore's RDS request signer), the batch applied set-based in one unit "
            "of work, one EMF document written. `sqlalchemy.orm` loaded after the first "
            f"invocation: {'yes' if ours_orm else 'no'} (the repositories build on "
            "`dataaccess/tables.py`'s Core tables; the ORM classes are for ad-hoc work).",
            "baseline: bench/cold_baseline.py: botocore's RDS client at module scope, "
            "`generate_db_auth_token` + `psycopg2.connect` on the first invocation, one "
            "INSERT ... ON CONFLICT and one UPDATE per record in one transaction.",
            f"both sign with a key of this run and log in (sslmode=verify-full when the cluster "
            f"has TLS) through scripts/localiam's stand-in for RDS, which verified {logins} "
            "tokens; the sides take turns going first in each round. Bytecode cached "
            "(PYTHONPYCACHEPREFIX, a directory of the run, filled by the warm-up). Python "
            f"{sys.version.split()[0]} here; Lambda runs 3.12.",
        ],
        extra={
            "ours_import_ms": part("ours", "import"),
            "ours_invoke_ms": part("ours", "invoke"),
            "base_import_ms": part("baseline", "import"),
            "base_invoke_ms": part("baseline", "invoke"),
            "core_ms": core_ms,
            "logins": logins,
            "ours_loads_orm": ours_orm,
            "cold_starts": starts.runs,
            "ours_import_costs": ours_costs[1],
        },
    )

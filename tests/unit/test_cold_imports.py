"""What a cold start imports: the modules measured too costly for the hot path stay out
(docs/lambda.md, "Cold start and SnapStart"; the figures are B7's, never asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from scripts.lambda_loader import LAMBDA_DIR

REPO = LAMBDA_DIR.parent
# What only rare paths need: imported by them, when they run.
NOT_AT_IMPORT = [
    "boto3",  # botocore signs the token and reads the secret
    "s3transfer",
    "aws_lambda_powertools.utilities.batch",  # BatchProcessingError: every record failed
    "aws_lambda_powertools.utilities.data_classes",  # SQS records are read as dicts
    "dataaccess.services",  # the per-record fallback
    "dataaccess.doctor",  # {"doctor": true}
    "aws_xray_sdk",  # tracing off
    "sqlalchemy.orm",  # the repositories use Core tables (dataaccess/tables.py)
    "dataaccess.models",  # the ORM classes, for UnitOfWork.session
]


def imported_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after `statement`, run from the zip's layout."""
    probe = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("POWERTOOLS_", "LAMBDA_"))}
    out = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=LAMBDA_DIR,
        env={**clean, "PYTHONPATH": f"{LAMBDA_DIR}{os.pathsep}{REPO}", "AWS_REGION": "eu-west-1"},
        capture_output=True,
        text=True,
        check=True,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_the_handlers_cold_import_leaves_the_rare_paths_out():
    modules = imported_after("import handler")

    assert {"handler", "stock_batch", "botocore.signers", "sqlalchemy"} <= modules
    assert [name for name in NOT_AT_IMPORT if name in modules] == []


def test_the_credential_providers_need_botocore_only():
    modules = imported_after("import dataaccess.credentials")

    assert "botocore.session" in modules
    assert not {"boto3", "s3transfer"} & modules

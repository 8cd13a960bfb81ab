"""checkov passes over cfn/ and terraform/, and every skipped check is justified."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.conftest import CFN_DIR, REPO, TF_DIR, checkov_path

CONFIG = REPO / ".checkov.yaml"
DOCS = REPO / "docs" / "infrastructure.md"


def json_documents(text: str) -> list[dict[str, Any]]:
    """checkov prints one JSON document per report, sometimes several in a row."""
    decoder = json.JSONDecoder()
    reports: list[dict[str, Any]] = []
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return reports
        document, index = decoder.raw_decode(text, index)
        reports.extend(document if isinstance(document, list) else [document])


@pytest.fixture(scope="session")
def checkov_reports() -> list[dict[str, Any]]:
    """One checkov run over both folders, with the project's config."""
    executable = checkov_path()
    if executable is None:
        pytest.skip("checkov is not installed: run `make checkov-venv` (make test does)")
    assert Path(executable).exists(), f"CHECKOV={executable} does not exist"
    result = subprocess.run(
        [executable, "--config-file", str(CONFIG), "--skip-download", "--output", "json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    reports = json_documents(result.stdout)
    failed = [
        (c["check_id"], c["resource"], c["file_path"])
        for r in reports
        for c in r["results"]["failed_checks"]
    ]
    assert result.returncode == 0, failed or result.stderr[-2000:]
    return reports


@pytest.mark.slow
def test_checkov_passes_with_no_failures_and_no_parse_errors(checkov_reports):
    assert {r["check_type"] for r in checkov_reports} == {"cloudformation", "terraform"}
    for report in checkov_reports:
        assert report["summary"]["failed"] == 0
        assert report["summary"]["parsing_errors"] == 0


@pytest.mark.slow
def test_checkov_scanned_every_template_and_terraform_file(checkov_reports):
    scanned = {
        Path(c["file_path"]).name for r in checkov_reports for c in r["results"]["passed_checks"]
    }
    expected = {p.name for p in CFN_DIR.glob("*.yaml")} | {"main.tf"}
    # checkov 3.3 has no policy for AWS::Cognito::*, AWS::RDS::DBProxy* or
    # AWS::CloudWatch::Dashboard resources: nothing passes or fails there.
    expected -= {"cognito.yaml", "proxy.yaml", "dashboard.yaml"}
    assert expected <= scanned, expected - scanned


def skipped_checks() -> dict[str, str]:
    """Skipped check id -> its reason (the comment on the same line)."""
    config = yaml.safe_load(CONFIG.read_text())
    reasons = dict(
        re.findall(r"^\s*-\s*(CKV2?_[A-Z0-9_]+)\s*#\s*(\S.*)$", CONFIG.read_text(), re.M)
    )
    assert set(config["skip-check"]) == set(reasons), "every skip needs a same-line # reason"
    return reasons


def test_every_skipped_check_has_a_reason_and_is_documented():
    reasons = skipped_checks()
    docs = DOCS.read_text()
    for check, reason in reasons.items():
        assert len(reason) > 20, check
        assert check in docs, f"{check} is skipped but not explained in {DOCS.name}"


def test_skips_live_only_in_the_config_file():
    files = [*CFN_DIR.glob("*.yaml"), *TF_DIR.glob("*.tf")]
    assert files
    for path in files:
        assert "checkov:skip" not in path.read_text(), path.name

"""cfn-lint passes every template with no error and no warning."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.infra.conftest import CFN_DIR, tool_in_venv


def cfn_lint(*paths: Path) -> subprocess.CompletedProcess[str]:
    executable = tool_in_venv("cfn-lint")
    assert executable, "cfn-lint is not installed: run `make install` (it is in the dev extra)"
    return subprocess.run(
        [executable, "--format", "parseable", *map(str, paths)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def test_every_template_passes_cfn_lint():
    templates = sorted(CFN_DIR.glob("*.yaml"))
    result = cfn_lint(*templates)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_cfn_lint_reports_warnings_as_failures(tmp_path):
    """The check above can fail: an unused parameter is only a warning."""
    template = tmp_path / "t.yaml"
    template.write_text(
        "AWSTemplateFormatVersion: '2010-09-09'\n"
        "Parameters:\n  Unused:\n    Type: String\n"
        "Resources:\n  Topic:\n    Type: AWS::SNS::Topic\n"
    )
    result = cfn_lint(template)
    assert result.returncode != 0
    assert "W2001" in result.stdout

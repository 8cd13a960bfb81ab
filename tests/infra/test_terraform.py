"""terraform fmt, init (offline), validate and test; skipped only without terraform."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.infra.conftest import TF_DIR

TERRAFORM = shutil.which(os.environ.get("TERRAFORM", "terraform"))
needs_terraform = pytest.mark.skipif(
    TERRAFORM is None, reason="terraform is not installed (it comes with the machine image)"
)


def plugin_dir() -> str | None:
    """TF_PLUGIN_DIR when given, else a provider mirror at the conventional path."""
    given = os.environ.get("TF_PLUGIN_DIR")
    if given:
        return given
    fallback = Path("/opt/tf-plugins")
    return str(fallback) if fallback.is_dir() else None


@pytest.fixture(scope="session")
def terraform(tmp_path_factory: pytest.TempPathFactory):
    """Run terraform in terraform/ with a throwaway data dir and fake credentials."""
    assert TERRAFORM is not None
    env = os.environ | {
        "TF_DATA_DIR": str(tmp_path_factory.mktemp("tf-data")),
        "TF_IN_AUTOMATION": "1",
        "TF_INPUT": "0",
        "CHECKPOINT_DISABLE": "1",
        # The tests mock the provider; these only make sure nothing real is used.
        "AWS_ACCESS_KEY_ID": "AKIAFAKEFAKEFAKEFAKE",
        "AWS_SECRET_ACCESS_KEY": "fake-secret-for-offline-tests",
        "AWS_REGION": "eu-west-1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    env.pop("AWS_PROFILE", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [TERRAFORM, f"-chdir={TF_DIR}", *args, "-no-color"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=300,
        )

    flags = ["-backend=false", "-input=false"]
    if plugin_dir():
        flags.append(f"-plugin-dir={plugin_dir()}")
    init = run("init", *flags)
    assert init.returncode == 0, init.stdout + init.stderr
    return run


@needs_terraform
def test_terraform_is_formatted(terraform):
    result = terraform("fmt", "-check", "-recursive", "-diff")
    assert result.returncode == 0, result.stdout


@needs_terraform
@pytest.mark.slow
def test_terraform_validates(terraform):
    result = terraform("validate")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Warning" not in result.stdout


@needs_terraform
@pytest.mark.slow
def test_terraform_test_passes_offline(terraform):
    result = terraform("test")
    assert result.returncode == 0, result.stdout + result.stderr
    match = re.search(r"Success! (\d+) passed, 0 failed", result.stdout)
    assert match, result.stdout
    assert int(match.group(1)) >= 17


def test_every_permission_policy_comes_from_the_tested_map():
    """terraform test checks local.policy_documents; nothing may bypass it."""
    main = (TF_DIR / "main.tf").read_text()
    policies = re.findall(r"^\s*policy\s*=\s*(.+)$", main, re.M)
    assert policies
    assert all(p.startswith("local.policy_documents.") for p in policies), policies
    assert "aws_iam_policy_document" not in main
    assert "aws_iam_access_key" not in main
    assert "aws_iam_user_policy" not in main

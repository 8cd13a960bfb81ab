"""The API's Dockerfile, checked without a Docker engine: hadolint plus the contract."""

import shutil
import subprocess
import sys
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parents[2] / "api" / "Dockerfile"


def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    return str(found) if found.exists() else (shutil.which("hadolint") or "hadolint")


def test_hadolint_passes():
    result = subprocess.run(
        [hadolint(), "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_image_contract():
    text = DOCKERFILE.read_text()
    assert "FROM python:3.12-slim" in text
    assert "/app/certs/rds-global-bundle.pem" in text
    assert "USER 10001" in text
    assert "HEALTHCHECK" in text
    assert "/healthz" in text
    assert 'api:create_app()"]' in text

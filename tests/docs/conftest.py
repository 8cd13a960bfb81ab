"""One local run for these tests, started as `make run` starts it (scripts/run_local.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts.localpg import free_port
from scripts.run_local import LocalRun, local_run

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRun]:
    """The API on a free port over a seeded cluster of its own; never `make run`'s folder."""
    run_dir = REPO / ".localpg" / f"readme-{os.getpid()}"
    log_path = tmp_path_factory.mktemp("run") / "api.log"
    try:
        with log_path.open("w") as log, local_run(run_dir, free_port(), log=log) as run:
            yield run
    except Exception:
        print(log_path.read_text())  # the API's own log, for the failure report
        raise
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)

"""The README's examples run as written, in order, against what `make run` serves.

Each fenced `bash`/`sh` block runs in bash, and each `python` block in the
virtualenv's interpreter, one after another as a reader would type them into one
terminal: what a block exports (`eval "$(make -s env)"`) the next one has. A block
that must not run (`make run` itself, `make test`) is preceded by
`<!-- not run: reason -->`; every other block of those languages is run.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from scripts.run_local import LocalRun

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
MAX_LINES = 150
SHELLS = {"bash", "sh"}
RUNNABLE = SHELLS | {"python"}
# Fenced blocks that are not code: the diagram.
NOT_CODE = {"text", "mermaid"}
_FENCE = re.compile(
    r"(?:^<!--\s*not run:(?P<reason>[^>]*)-->\n)?^```(?P<lang>[\w-]*)\n(?P<body>.*?)^```$",
    re.M | re.S,
)
# What a reader's shell would not have: this test's own settings and tools.
_NOT_INHERITED = re.compile(r"^(DB_|PG|AUTH_|AWS_|MAKE|MFLAGS$|VIRTUAL_ENV$|TOKEN$|CUSTOMER_)")


@dataclass(frozen=True)
class Block:
    line: int
    lang: str
    body: str
    not_run: str | None  # the reason, for a marked block

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def blocks(text: str) -> list[Block]:
    return [
        Block(
            line=text.count("\n", 0, match.start("lang")) + 1,
            lang=match["lang"],
            body=match["body"],
            not_run=None if match["reason"] is None else match["reason"].strip(),
        )
        for match in _FENCE.finditer(text)
    ]


def json_values(output: str) -> list[object]:
    """Every JSON value printed at the start of a line or right after another (curl -s)."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while (start := output.find("{", at)) != -1:
        try:
            value, at = decoder.raw_decode(output, start)
        except json.JSONDecodeError:
            at = start + 1
            continue
        values.append(value)
    return values


def reader_environment(run: LocalRun) -> dict[str, str]:
    """A plain shell in the checkout: no virtualenv on PATH, no DB_* or tokens yet."""
    venv_bin = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not _NOT_INHERITED.match(k)}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if p != venv_bin)
    env["LOCALPG_RUN_DIR"] = str(run.run_dir)  # what `make env` reads: this test's run
    return env


def run_block(block: Block, env: dict[str, str], dump: Path) -> tuple[str, dict[str, str]]:
    """Run one block in `env`; its output, and the environment it leaves for the next one."""
    if block.lang in SHELLS:
        script = f"set -euo pipefail\n{block.body}\nenv -0 > {dump}\n"
        argv = ["bash", "-c", script]
    else:
        argv = [sys.executable, "-c", block.body]
    result = subprocess.run(
        argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{block} failed with {result.returncode}:\n{output}"
    # An answer of the API that is an error is a problem document (RFC 9457).
    assert '"urn:problem:' not in output, f"{block} got an error from the API:\n{output}"
    assert '"about:blank"' not in output, f"{block} got an error from the API:\n{output}"
    if block.lang in SHELLS:
        pairs = (item.partition("=") for item in dump.read_text().split("\0") if item)
        env = {name: value for name, _, value in pairs}
    return output, env


def test_the_readme_is_short():
    lines = len(README.read_text().splitlines())
    assert lines <= MAX_LINES, f"README.md has {lines} lines: move detail into docs/"


def test_every_example_is_run_or_says_why_not():
    found = blocks(README.read_text())

    assert found, "no fenced blocks found: the pattern no longer matches the README"
    for block in found:
        assert block.lang in RUNNABLE | NOT_CODE, f"{block}: give the block a known language"
        if block.not_run is not None:
            assert block.lang in RUNNABLE, f"{block}: only code blocks need a marker"
            assert block.not_run, f"{block}: say why it is not run"
    run = [b for b in found if b.lang in RUNNABLE and b.not_run is None]
    assert {b.lang for b in run} == {"bash", "python"}
    assert any('eval "$(make -s env)"' in b.body for b in run)


@pytest.mark.slow
def test_the_readme_examples_run_as_written(served: LocalRun, tmp_path: Path):
    env = reader_environment(served)
    ran, outputs = [], {}
    for block in blocks(README.read_text()):
        if block.lang not in RUNNABLE or block.not_run is not None:
            continue
        outputs[block.line], env = run_block(block, env, tmp_path / "env")
        ran.append(block)

    expected = [b for b in blocks(README.read_text()) if b.lang in RUNNABLE and b.not_run is None]
    assert ran == expected
    everything = "\n".join(outputs.values())
    # The two requests with one Idempotency-Key gave one order, twice.
    orders = [v for v in json_values(everything) if isinstance(v, dict) and "lines" in v]
    assert len(orders) == 2, everything
    assert orders[0] == orders[1]
    # The report counts the orders placed above: by curl, and by the Python example.
    placed = re.search(r'"placed": \{\s*"count": (\d+)', everything)
    assert placed is not None, everything
    assert int(placed[1]) >= 2
    assert "GIZMO-1" in everything

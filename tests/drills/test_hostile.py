"""D7 hostile input, short: generated and classic hostile requests against the live API,
malformed SQS bodies through the stock-events handler, on a real replicated stage."""

from __future__ import annotations

import pytest

from drills.hostile import d7_hostile
from drills.outages import Pace
from drills.stage import stage


@pytest.mark.slow
def test_hostile_input_is_refused_cleanly_and_never_blocks_good_input() -> None:
    with stage() as st:
        result = d7_hostile(st, Pace.short(), api_cases=300, sqs_bodies=300)
    failed = "\n".join(result.failed_checks())
    notes = "\n".join(note[:2000] for note in result.notes)
    assert result.passed, f"failed checks:\n{failed}\nnotes:\n{notes}"

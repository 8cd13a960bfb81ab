"""How a benchmark row shows its ratio: never a miss rounded onto the goal."""

import pytest

from bench.harness import Row


def row(ours: float, baseline: float, better: str, limit: float) -> Row:
    return Row("B0", "w", ours, baseline, "ms", "goal", better, limit)


@pytest.mark.parametrize(
    ("ours", "baseline", "better", "limit", "shown", "met"),
    [
        (2.77, 27.45, "lower", 0.1, "0.101", False),  # rounds to the goal, misses it
        (2.73, 27.45, "lower", 0.1, "0.10", True),  # rounds to the goal, meets it
        (3.66, 32.61, "lower", 0.1, "0.11", False),
        (797.0, 1000.0, "higher", 0.8, "0.797", False),
        (1449.0, 1000.0, "lower", 1.5, "1.45", True),
        (1.0, 1.0, "lower", 1.05, "1.00", True),
    ],
)
def test_the_ratio_shows_which_side_of_the_goal_it_is(ours, baseline, better, limit, shown, met):
    r = row(ours, baseline, better, limit)
    assert r.ratio_text == shown
    assert r.met is met

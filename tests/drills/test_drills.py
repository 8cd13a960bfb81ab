"""The short drills: each fault of the failure model, caused for real, in `make test`.

`make drills` runs the full ones and writes docs/RELIABILITY.md; these run the same
code at a shorter pace, so CI keeps every promise true.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from drills.credentials import d5_token_expiry, d6_secret_rotation
from drills.outages import Pace, d1_failover, d2_restart, d3_pause, d4_blackhole, d9_runaway
from drills.result import DrillResult
from drills.secrecy import LeakScan, d8_secrets
from drills.stage import Stage, stage

pytestmark = pytest.mark.slow
PACE = Pace.short()


@pytest.fixture(scope="module")
def scan() -> LeakScan:
    """The logs of every stage below, for D8."""
    return LeakScan()


@pytest.fixture(scope="module")
def shared(scan: LeakScan) -> Iterator[Stage]:
    """One stage for the drills that leave it usable (D1 promotes, so it gets its own)."""
    with stage() as st:
        yield st
        scan.add(st)


def holds(result: DrillResult) -> None:
    assert result.passed, f"{result.key}: {result.failed_checks()}; {result.notes}"


def test_d9_a_runaway_query_is_cancelled_and_its_connection_reused(shared):
    holds(d9_runaway(shared, PACE))


def test_d5_tokens_roll_over_without_a_failed_login(shared):
    holds(d5_token_expiry(shared, PACE))


def test_d6_a_secret_rotation_fails_no_request(shared):
    holds(d6_secret_rotation(shared, PACE))


def test_d4_a_black_holed_endpoint_holds_no_thread_past_its_timeouts(shared):
    holds(d4_blackhole(shared, PACE))


def test_d2_a_restart_under_load_loses_nothing(shared):
    holds(d2_restart(shared, PACE))


def test_d3_work_started_during_a_pause_completes_after_the_resume(shared):
    holds(d3_pause(shared, PACE))


def test_d1_a_failover_loses_nothing_and_leaves_no_connection_on_the_old_writer(scan):
    with stage() as st:
        result = d1_failover(st, PACE)
        scan.add(st)
    holds(result)


def test_d8_no_secret_in_any_log(shared, scan):
    scan.add(shared)
    holds(d8_secrets(scan))

"""The benchmarks in smoke mode (tiny sizes), so they cannot rot. Timing is never asserted."""

from __future__ import annotations

import math

import pytest

from bench import hot_updates
from bench.__main__ import WORKLOADS, run_all
from bench.harness import Sizes, bench_database
from bench.report import render


@pytest.mark.slow
def test_every_workload_runs_and_reports_a_well_formed_row(pg_cluster):
    rows = run_all(
        pg_cluster.host,
        pg_cluster.port,
        pg_cluster.user,
        pg_cluster.password,
        Sizes.smoke(),
        ca_file=pg_cluster.ca_file,
    )
    assert [row.key for row in rows] == list(WORKLOADS)
    for row in rows:
        assert row.ours > 0, row.key
        assert row.baseline > 0, row.key
        assert math.isfinite(row.ratio), row.key
        assert row.better in ("lower", "higher")
        assert row.workload
        assert row.goal
    b4 = next(row for row in rows if row.key == "B4")
    assert b4.extra["minted"] == 1
    b7 = next(row for row in rows if row.key == "B7")
    # Every cold start, ours or the baseline's, logged in once, with a token the stand-in
    # for RDS verified.
    assert b7.extra["logins"] == b7.extra["cold_starts"] >= 2 * Sizes.smoke().cold_starts
    # Neither the import nor the first invocation loads the ORM.
    assert b7.extra["ours_loads_orm"] is False
    text = render(
        rows,
        sizes=Sizes.smoke(),
        command="python -m bench --smoke",
        elapsed=1.0,
        tls=pg_cluster.ca_file is not None,
    )
    for key in WORKLOADS:
        assert f"| {key} |" in text


@pytest.mark.slow
def test_hot_updates_compares_both_schemas_and_leaves_the_database_at_head(pg_cluster):
    with bench_database(
        pg_cluster.host, pg_cluster.port, pg_cluster.user, pg_cluster.password, pg_cluster.ca_file
    ) as bdb:
        results = hot_updates.run(bdb, products=2_000, batches=5, reads=2, rounds=2)
        conn = bdb.admin_connect()
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(*) FROM pg_indexes WHERE indexname = %s",
                    ("ix_products_stock_sku",),
                )
                assert cur.fetchone() == (0,)
                cur.execute("SELECT count(*) FROM products")
                assert cur.fetchone() == (2_000,)
        finally:
            conn.close()
    assert [schema for schema, _ in results] == [hot_updates.HEAD, hot_updates.BEFORE]
    for _, figures in results:
        assert len(figures.batch_s) == 2 * 5
        assert len(figures.report_s) == 2 * 2
        assert figures.wal_bytes > 0
    text = hot_updates.render(results, products=2_000, tls=False, command="smoke")
    assert "| 0009: no stock index, fillfactor 90 |" in text

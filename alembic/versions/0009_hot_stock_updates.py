"""Stock updates become HOT: no index on products.stock, fillfactor 90

Every stock writer (orders, their cancellation, stock events) updates
``products.stock`` and ``updated_at``. While an index covered ``stock`` (0005's
``ix_products_stock_sku``), no such update could be a heap-only tuple (HOT)
update: each one wrote a new entry into all three of the table's indexes and
left dead ones for VACUUM, on the table every write touches. With no index on
a column the writers change, PostgreSQL updates the row in its own page when
the page has room, and indexes nothing.

- ``ix_products_stock_sku`` goes. ``DROP INDEX`` takes the table's lock only for
  the moment of the drop, and waits for it no longer than
  ``MIGRATION_LOCK_TIMEOUT_MS`` (alembic/env.py): beside live traffic it fails
  rather than queues. ``SET (fillfactor)`` blocks no reads or writes.
- ``fillfactor = 90``: new pages keep a tenth free, so an update finds room in
  its own page. Existing pages are not rewritten; pruning frees room in them as
  their rows are updated.

What it buys and costs, ``python -m bench.hot_updates`` (100,000 products, the
two schemas taking turns in one run; six runs, docs/benchmarks.md):

- B6's transaction (a 10-event batch through ``ingest_stock_events``: the lock,
  one statement that records and applies, the commit) takes 0.88-0.95 of its
  time with the index and writes 4.7 KB of WAL instead of 7.4 KB (Aurora
  Standard bills storage I/O); the table grew 0 pages per 1,000 batches, against
  26 with the index.
- The low-stock report reads every product instead of the index's range: 11-18
  ms instead of 2-4 ms for 100,000 products, on the reader, once per scheduled
  report. ``GET /products?stock_below=`` walks the sku index and filters, as
  the page's sku order needs anyway: as fast while low stock is common, slower
  when only a few of many products match.

Downgrade puts the index back (``CREATE INDEX``, which blocks writes to
products while it builds) and the default fillfactor.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Frozen here, not imported (0005's names and the value this revision sets).
STOCK_INDEX = "ix_products_stock_sku"
FILLFACTOR = 90


def upgrade() -> None:
    op.drop_index(STOCK_INDEX, table_name="products")
    op.execute(f"ALTER TABLE products SET (fillfactor = {FILLFACTOR})")


def downgrade() -> None:
    op.execute("ALTER TABLE products RESET (fillfactor)")
    op.create_index(STOCK_INDEX, "products", ["stock", "sku"])

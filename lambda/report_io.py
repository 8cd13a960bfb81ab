"""The report function's request (a schedule event or a direct invoke's payload) and its
response, a typed result whose `to_json()` is what the function returns."""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypedDict

from dataaccess import reports
from dataaccess.reports import LowStockItem, OrderTotals
from stock_messages import timestamp

MAX_REPORT_HOURS = 24 * 366


class ReportRequestError(ValueError):
    """A report invocation with an invalid parameter; the message names it."""


@dataclass(frozen=True)
class ReportRequest:
    """The report's window `[since, until)` and its low-stock limits."""

    since: dt.datetime
    until: dt.datetime
    threshold: int
    limit: int


def report_request(event: Any, env: Mapping[str, str] = os.environ) -> ReportRequest:
    """The report's window and limits from a schedule event or a direct invoke's payload.

    A scheduled (EventBridge) event reports the `REPORT_WINDOW_HOURS` ending at its
    `time`; a direct invoke may pass `since`, `until`, `hours`, `threshold`, `limit`.
    """
    params: dict[str, Any] = dict(event) if isinstance(event, dict) else {}
    if "detail-type" in params:
        # A schedule carries its time; a rule's constant input would be a plain payload.
        if params.get("time") is None:
            raise ReportRequestError("a schedule event must carry its time")
        params = {"until": params["time"]}
    hours = _positive_int(params, "hours", _env_int(env, "REPORT_WINDOW_HOURS", 24))
    if hours > MAX_REPORT_HOURS:
        raise ReportRequestError(f"hours must be at most {MAX_REPORT_HOURS} (a year)")
    until = (
        timestamp(params["until"], "until", ReportRequestError)
        if params.get("until") is not None
        else dt.datetime.now(dt.UTC)
    )
    since = (
        timestamp(params["since"], "since", ReportRequestError)
        if params.get("since") is not None
        else until - dt.timedelta(hours=hours)
    )
    if since >= until:
        raise ReportRequestError("since must be before until")
    if until - since > dt.timedelta(hours=MAX_REPORT_HOURS):
        raise ReportRequestError(f"since to until must span at most {MAX_REPORT_HOURS} hours")
    threshold_default = _env_int(env, "REPORT_LOW_STOCK_THRESHOLD", 10)
    return ReportRequest(
        since=since,
        until=until,
        threshold=_positive_int(params, "threshold", threshold_default),
        limit=min(_positive_int(params, "limit", 100), reports.MAX_LOW_STOCK_LIMIT),
    )


def _positive_int(params: dict[str, Any], name: str, default: int) -> int:
    value = params.get(name, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ReportRequestError(f"{name} must be a positive integer")
    return value


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ReportRequestError(f"{name} must be a positive integer; got {raw!r}")
    return int(raw)


# The response's JSON shape (docs/lambda.md, "Report").


class StatusJson(TypedDict):
    count: int
    total_cents: int


class OrdersJson(TypedDict):
    placed: StatusJson
    cancelled: StatusJson


class WindowJson(TypedDict):
    since: str
    until: str


class LowStockItemJson(TypedDict):
    sku: str
    name: str
    stock: int


class LowStockJson(TypedDict):
    threshold: int
    items: list[LowStockItemJson]


class ReportJson(TypedDict):
    window: WindowJson
    orders: OrdersJson
    low_stock: LowStockJson


@dataclass(frozen=True)
class ReportResult:
    """What one report found: the order totals of its window, the products low on stock."""

    threshold: int
    totals: OrderTotals
    low_stock: list[LowStockItem]

    def to_json(self) -> ReportJson:
        """The function's return value: JSON types only, timestamps in ISO 8601."""
        placed, cancelled = self.totals.placed, self.totals.cancelled
        return {
            "window": {
                "since": self.totals.since.isoformat(),
                "until": self.totals.until.isoformat(),
            },
            "orders": {
                "placed": {"count": placed.count, "total_cents": placed.total_cents},
                "cancelled": {"count": cancelled.count, "total_cents": cancelled.total_cents},
            },
            "low_stock": {
                "threshold": self.threshold,
                "items": [
                    {"sku": item.sku, "name": item.name, "stock": item.stock}
                    for item in self.low_stock
                ],
            },
        }

"""The order rules place_order decides before any SQL: merging the requested lines, and the
request fingerprint an idempotency key is checked against (dataaccess/services.py)."""

from __future__ import annotations

import hashlib
import itertools
import re

import pytest

from dataaccess.errors import InvalidRequestError
from dataaccess.models import Order
from dataaccess.services import (
    MAX_LINE_QUANTITY,
    MAX_ORDER_LINES,
    LineRequest,
    merge_lines,
    request_fingerprint,
)


def lines(*pairs: tuple[str, int]) -> list[LineRequest]:
    return [LineRequest(sku, quantity) for sku, quantity in pairs]


def skus(count: int) -> list[str]:
    return [f"SKU-{i:03d}" for i in range(count)]


# -- merging -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("requested", "merged"),
    [
        ([("A", 1)], [("A", 1)]),
        ([("A", 1), ("A", 3)], [("A", 4)]),
        ([("A", 1), ("B", 2), ("A", 3)], [("A", 4), ("B", 2)]),
        ([("C", 1), ("B", 1), ("A", 1)], [("A", 1), ("B", 1), ("C", 1)]),
        ([("b", 1), ("B", 1), ("a", 1)], [("B", 1), ("a", 1), ("b", 1)]),  # code-point order
        ([("B", 2), ("A", 5), ("B", 2), ("B", 2)], [("A", 5), ("B", 6)]),
    ],
)
def test_repeated_skus_are_summed_and_the_result_is_in_sku_order(requested, merged):
    # items(), not ==: dict equality ignores order, and the order is the lock order.
    assert list(merge_lines(lines(*requested)).items()) == merged


def test_skus_differing_in_case_or_spaces_are_not_merged():
    assert merge_lines(lines(("A", 1), ("a", 1), ("A ", 1))) == {"A": 1, "A ": 1, "a": 1}


def test_any_iterable_is_read_once():
    generated = (LineRequest(sku, 2) for sku in ["B", "A", "B"])

    assert merge_lines(generated) == {"A": 2, "B": 4}


@pytest.mark.parametrize("quantity", [1, 2, MAX_LINE_QUANTITY - 1, MAX_LINE_QUANTITY])
def test_a_line_quantity_within_its_bounds_is_accepted(quantity):
    assert merge_lines(lines(("A", quantity))) == {"A": quantity}


@pytest.mark.parametrize("quantity", [0, -1, -MAX_LINE_QUANTITY, MAX_LINE_QUANTITY + 1, 10**12])
def test_a_line_quantity_out_of_bounds_is_refused_naming_its_sku(quantity):
    requested = lines(("OK-1", 1), ("SKU-BAD", quantity), ("OK-2", 1))
    expected = f"^quantity of SKU-BAD must be between 1 and {MAX_LINE_QUANTITY}; got {quantity}$"

    with pytest.raises(InvalidRequestError, match=expected):
        merge_lines(requested)


def test_each_line_is_checked_before_merging():
    # 0 + 5 would make a valid total; the zero line is refused all the same.
    with pytest.raises(InvalidRequestError, match=r"^quantity of A must be between"):
        merge_lines(lines(("A", 5), ("A", 0)))


@pytest.mark.parametrize(
    "quantities",
    [
        [MAX_LINE_QUANTITY // 2, MAX_LINE_QUANTITY - MAX_LINE_QUANTITY // 2],
        [1] * 3 + [MAX_LINE_QUANTITY - 3],
        [MAX_LINE_QUANTITY - 1, 1],
    ],
)
def test_a_merged_total_at_the_bound_is_accepted(quantities):
    assert merge_lines(lines(*(("A", q) for q in quantities))) == {"A": MAX_LINE_QUANTITY}


@pytest.mark.parametrize(
    "quantities", [[MAX_LINE_QUANTITY, 1], [MAX_LINE_QUANTITY] * 2, [5_001, 5_000]]
)
def test_a_merged_total_past_the_bound_is_refused_naming_its_sku(quantities):
    requested = lines(("OTHER", 1), *(("SKU-BIG", q) for q in quantities))
    expected = (
        f"^total quantity of SKU-BIG must be between 1 and {MAX_LINE_QUANTITY}; "
        f"got {sum(quantities)}$"
    )

    with pytest.raises(InvalidRequestError, match=expected):
        merge_lines(requested)


@pytest.mark.parametrize("count", [1, MAX_ORDER_LINES])
def test_the_number_of_distinct_skus_at_its_bounds_is_accepted(count):
    merged = merge_lines(lines(*((sku, 1) for sku in reversed(skus(count)))))

    assert list(merged) == skus(count)


def test_the_line_limit_counts_distinct_skus_not_lines():
    requested = lines(*((sku, 1) for sku in skus(MAX_ORDER_LINES) * 3))

    merged = merge_lines(requested)

    assert len(merged) == MAX_ORDER_LINES
    assert set(merged.values()) == {3}


@pytest.mark.parametrize("count", [0, MAX_ORDER_LINES + 1])
def test_the_number_of_distinct_skus_out_of_bounds_is_refused(count):
    expected = f"^an order needs 1 to {MAX_ORDER_LINES} distinct skus$"

    with pytest.raises(InvalidRequestError, match=expected):
        merge_lines(lines(*((sku, 1) for sku in skus(count))))


# -- fingerprint ---------------------------------------------------------------


def fingerprint(customer_id: int, *pairs: tuple[str, int]) -> str:
    return request_fingerprint(customer_id, merge_lines(lines(*pairs)))


def test_the_same_request_in_any_order_has_the_same_fingerprint():
    requested = [("SKU-RED", 2), ("SKU-BLUE", 1), ("SKU-RED", 1), ("SKU-GREEN", 4)]

    prints = {fingerprint(7, *order) for order in itertools.permutations(requested)}

    assert len(prints) == 1
    assert prints == {fingerprint(7, ("SKU-BLUE", 1), ("SKU-GREEN", 4), ("SKU-RED", 3))}


def test_the_fingerprint_ignores_the_order_of_the_mapping_it_is_given():
    assert request_fingerprint(7, {"B": 1, "A": 2}) == request_fingerprint(7, {"A": 2, "B": 1})


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ((7, ("A", 1)), (8, ("A", 1))),  # another customer
        ((7, ("A", 1)), (7, ("A", 2))),  # another quantity
        ((7, ("A", 1)), (7, ("B", 1))),  # another sku
        ((7, ("A", 1)), (7, ("A", 1), ("B", 1))),  # one more line
        ((7, ("A", 1), ("B", 2)), (7, ("A", 2), ("B", 1))),  # quantities swapped
        ((12, ("3", 1)), (1, ("23", 1))),  # the same characters, put together otherwise
        ((7, ("A", 11)), (7, ("A1", 1))),
    ],
)
def test_a_different_request_has_a_different_fingerprint(first, second):
    assert fingerprint(*first) != fingerprint(*second)


def test_the_fingerprint_is_64_hex_characters_and_fits_its_column():
    value = fingerprint(7, *((sku, MAX_LINE_QUANTITY) for sku in skus(MAX_ORDER_LINES)))

    assert re.fullmatch(r"[0-9a-f]{64}", value)
    assert len(value) == Order.__table__.c.request_fingerprint.type.length


def test_the_fingerprint_is_stable_across_releases():
    # Stored with the order: a change here would refuse every retry, after a deploy, of an
    # order placed before it (IdempotencyKeyReusedError). The canonical form, spelled out:
    canonical = b'[1,[["SKU-BLUE",2],["SKU-RED",3]]]'

    value = fingerprint(1, ("SKU-RED", 3), ("SKU-BLUE", 2))

    assert value == hashlib.sha256(canonical).hexdigest()
    assert value == "c28fa376f3d3226fbfc328b2295a596a10ebeec7e38a791f318cdf8aa983a248"

"""Customers and products: uniqueness, updates and keyset pagination."""

import pytest

from dataaccess import services
from dataaccess.errors import AlreadyExistsError, InvalidRequestError, ProductNotFoundError


def test_customer_email_is_unique_case_insensitively(db):
    with db.unit_of_work() as uow:
        created = services.create_customer(uow, email=" Ann@Example.com ", name="Ann")
    assert created.email == "ann@example.com"
    assert created.created_at is not None  # server default, readable after the UoW closed
    with db.unit_of_work() as uow, pytest.raises(AlreadyExistsError):
        services.create_customer(uow, email="ANN@example.com", name="Ann again")


def test_duplicate_sku_is_a_conflict(db):
    with db.unit_of_work() as uow:
        services.create_product(uow, sku="DUP", name="One", price_cents=1)
    with db.unit_of_work() as uow, pytest.raises(AlreadyExistsError):
        services.create_product(uow, sku="DUP", name="Two", price_cents=1)


def test_update_product_changes_name_and_price_only(db):
    with db.unit_of_work() as uow:
        services.create_product(uow, sku="UP", name="Old", price_cents=100, stock=3)
    with db.unit_of_work() as uow:
        updated = services.update_product(uow, "UP", name="New", price_cents=150)
    assert (updated.name, updated.price_cents, updated.stock) == ("New", 150, 3)
    with db.unit_of_work() as uow, pytest.raises(InvalidRequestError):
        services.update_product(uow, "UP", price_cents=-1)
    with db.unit_of_work() as uow, pytest.raises(ProductNotFoundError):
        services.update_product(uow, "GONE", name="x")


def test_keyset_pages_cover_every_product_once(db):
    skus = [f"P-{i:03d}" for i in range(23)]
    for i, sku in enumerate(skus):
        with db.unit_of_work() as uow:
            services.create_product(uow, sku=sku, name=sku, price_cents=1, stock=i)
    seen, after = [], None
    while True:
        with db.unit_of_work(read_only=True) as uow:
            page = services.list_products(uow, after=after, limit=10)
        seen += [p.sku for p in page.items]
        after = page.next_after
        if after is None:
            break
    assert seen == skus
    with db.unit_of_work(read_only=True) as uow:
        low = services.list_products(uow, limit=100, stock_below=3)
    assert [p.sku for p in low.items] == skus[:3]
    with db.unit_of_work(read_only=True) as uow, pytest.raises(InvalidRequestError):
        services.list_products(uow, limit=101)

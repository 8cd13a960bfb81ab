from dataaccess import services


def test_create_and_read_product(db):
    with db.unit_of_work() as uow:
        services.create_product(uow, sku="SKU-1", name="Widget", price_cents=250, stock=3)
    with db.unit_of_work(read_only=True) as uow:
        assert services.get_product(uow, "SKU-1").stock == 3

"""Declared request and response models: they validate requests and generate the OpenAPI doc."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Annotated, Any

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from dataaccess.services import MAX_INT32, MAX_LINE_QUANTITY, MAX_ORDER_LINES, MAX_PAGE_SIZE

MAX_BIGINT = 2**63 - 1
DEFAULT_PAGE_SIZE = 50
SKU_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
# A page cursor is the page's last sku, hex-encoded: the pattern admits exactly
# the encodings of strings that match SKU_PATTERN (first byte a letter or digit,
# then letters, digits, '.', '_' or '-'), so any cursor the document allows is
# one the API can resume from.
_SKU_FIRST_HEX = r"(?:3[0-9]|[46][1-9a-f]|[57][0-9a])"
_SKU_REST_HEX = r"(?:2[de]|3[0-9]|[46][1-9a-f]|[57][0-9a]|5f)"
CURSOR_PATTERN = rf"^{_SKU_FIRST_HEX}{_SKU_REST_HEX}{{0,63}}$"

# Text without control characters: PostgreSQL refuses NUL in text, and the
# rest has no business in a name.
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\x00-\x1f]+$")]
Sku = Annotated[str, StringConstraints(pattern=SKU_PATTERN)]
# ASCII only: lower-casing non-ASCII text can change its length past the column's.
Email = Annotated[
    str,
    StringConstraints(max_length=254, pattern=r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9.-]+$"),
]


def _integral(value: Any) -> Any:
    """A JSON number written with a fraction or exponent that is a whole number, as an int.

    JSON Schema counts 50.0 and 5e1 as integers. Such numbers arrive as Decimal
    (api.jsonbody reads them so), which keeps them exact: 1.5, and
    1.0000000000000001 too, stay non-integers and are refused like any other.
    """
    # Magnitude first (below 10**20, past every bound here): int() of 1e100000000
    # would build a hundred-million-digit number. What is left is refused as not an integer.
    if isinstance(value, Decimal) and value.is_finite() and value.adjusted() < 20:
        integral = value.to_integral_value()
        if value == integral:
            return int(integral)
    return value


# An integer body field: no coercion from strings or booleans (the models are
# strict), but an integral number in any JSON spelling is the integer it is.
JSON_INTEGER = BeforeValidator(_integral)
Cents = Annotated[int, Field(ge=0, le=MAX_INT32), JSON_INTEGER]


class Body(BaseModel):
    """A JSON request body: exact types, no unknown fields."""

    model_config = ConfigDict(strict=True, extra="forbid")


# -- requests -------------------------------------------------------------------


class CustomerIn(Body):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"email": "ada@example.com", "name": "Ada Lovelace"}]}
    )

    email: Email
    name: Name


class ProductIn(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"sku": "WIDGET-1", "name": "Widget", "price_cents": 250, "stock": 100}]
        }
    )

    sku: Sku
    name: Name
    price_cents: Cents
    stock: Cents = 0


class ProductPatch(Body):
    """Name and/or price; stock moves only through orders and stock events.

    At least one of the two, not null: a null member is the same as a missing one.
    """

    # The document says what the validator below enforces (JSON Schema cannot
    # see a model validator): some member present with a value that is not null.
    model_config = ConfigDict(
        json_schema_extra={
            "anyOf": [
                {"required": ["name"], "properties": {"name": {"type": "string"}}},
                {"required": ["price_cents"], "properties": {"price_cents": {"type": "integer"}}},
            ],
            "examples": [{"price_cents": 275}, {"name": "Widget, blue"}],
        }
    )

    name: Name | None = None
    price_cents: Cents | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> ProductPatch:
        if self.name is None and self.price_cents is None:
            raise ValueError("give name and/or price_cents")
        return self


class ProductQuery(BaseModel):
    """Keyset pagination: pass the previous page's `next` back as `next`."""

    model_config = ConfigDict(extra="ignore")

    limit: int = Field(DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)
    next: str | None = Field(
        None,
        pattern=CURSOR_PATTERN,
        description="the previous page's `next`, to resume after it; opaque, but any value "
        "of this form is a position in sku order",
    )
    # stock >= 0, so stock below 0 could never match, yet would read every product.
    stock_below: int | None = Field(
        None, ge=1, le=MAX_INT32, description="only products with stock below this value"
    )


class LineIn(Body):
    sku: Sku
    quantity: Annotated[int, JSON_INTEGER] = Field(ge=1, le=MAX_LINE_QUANTITY)


class OrderIn(Body):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"customer_id": 1, "lines": [{"sku": "WIDGET-1", "quantity": 2}]}]
        }
    )

    customer_id: Annotated[int, JSON_INTEGER] = Field(ge=1, le=MAX_BIGINT)
    lines: list[LineIn] = Field(min_length=1, max_length=MAX_ORDER_LINES)


class OrderHeaders(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    idempotency_key: str | None = Field(
        None,
        alias="Idempotency-Key",
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="repeat a request safely: the same key and body return the same order "
        "(201, Idempotent-Replayed: true); the same key with another body is a 422 "
        "idempotency-key-reused. Keys are per customer.",
    )


# -- responses ------------------------------------------------------------------


class CustomerOut(BaseModel):
    id: int
    email: str
    name: str
    created_at: dt.datetime


class ProductOut(BaseModel):
    sku: str
    name: str
    price_cents: int
    stock: int


class ProductPageOut(BaseModel):
    items: list[ProductOut]
    next: str | None = Field(description="cursor for the next page; null on the last page")


class LineOut(BaseModel):
    sku: str
    quantity: int
    unit_price_cents: int


class OrderOut(BaseModel):
    id: int
    customer_id: int
    status: str
    total_cents: int
    lines: list[LineOut]
    created_at: dt.datetime
    cancelled_at: dt.datetime | None


class Health(BaseModel):
    status: str


class Problem(BaseModel):
    """RFC 9457 problem details (served as application/problem+json)."""

    model_config = ConfigDict(extra="allow")

    type: str
    title: str
    status: int
    detail: str
    errors: list[dict[str, Any]] | None = None
    sku: str | None = None


# -- the pagination cursor ------------------------------------------------------


def encode_cursor(sku: str) -> str:
    """Opaque to clients: today the last sku of the page, hex-encoded (see CURSOR_PATTERN)."""
    return sku.encode().hex()


def decode_cursor(cursor: str) -> str:
    """The sku a cursor of CURSOR_PATTERN's form (checked by ProductQuery) resumes after."""
    return bytes.fromhex(cursor).decode()

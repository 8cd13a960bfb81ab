"""Domain errors. Consumers map them to responses by type, never by message text."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error the services raise on purpose."""


class NotFoundError(DomainError):
    """The thing asked for does not exist."""


class CustomerNotFoundError(NotFoundError):
    pass


class ProductNotFoundError(NotFoundError):
    def __init__(self, sku: str) -> None:
        super().__init__(f"no product with sku {sku!r}")
        self.sku = sku


class OrderNotFoundError(NotFoundError):
    pass


class ConflictError(DomainError):
    """The request is valid but clashes with the current state."""


class AlreadyExistsError(ConflictError):
    """A unique value (email, sku) is taken."""


class InsufficientStockError(ConflictError):
    def __init__(self, sku: str, requested: int, available: int) -> None:
        super().__init__(
            f"insufficient stock for {sku}: requested {requested}, available {available}"
        )
        self.sku, self.requested, self.available = sku, requested, available


class IdempotencyKeyReusedError(ConflictError):
    """The idempotency key was used before with a different request."""


class InvalidRequestError(DomainError):
    """Input the service cannot act on (a non-positive quantity, an empty order...)."""

"""Errors the domain raises, each carrying what a user needs to fix the input."""

from __future__ import annotations

from typing import Any


class CrmError(Exception):
    """Base of every domain error; ``code`` is stable for APIs, the message is for people."""

    code = "error"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description of the error."""
        return {"error": self.code, "message": str(self)}


class ValidationError(CrmError):
    """A value that cannot be accepted, naming the field and the value."""

    code = "validation_error"

    def __init__(self, field: str, value: Any, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"invalid {field} {value!r}: {reason}")

    def to_dict(self) -> dict[str, Any]:
        """Field, value and reason, for API clients."""
        return {**super().to_dict(), "field": self.field, "value": str(self.value),
                "reason": self.reason}


class ConflictError(CrmError):
    """An identity that already belongs to another customer."""

    code = "conflict"

    def __init__(self, kind: str, value: str, customer_id: int, customer_name: str) -> None:
        self.kind = kind
        self.value = value
        self.customer_id = customer_id
        self.customer_name = customer_name
        super().__init__(
            f"{kind} {value} already belongs to customer #{customer_id} ({customer_name})"
        )

    def to_dict(self) -> dict[str, Any]:
        """The conflicting identity and the customer who holds it."""
        return {**super().to_dict(), "kind": self.kind, "value": self.value,
                "customer_id": self.customer_id, "customer_name": self.customer_name}


class NotFoundError(CrmError):
    """A record that does not exist (or was deleted)."""

    code = "not_found"

    def __init__(self, entity: str, key: Any) -> None:
        self.entity = entity
        self.key = key
        super().__init__(f"{entity} {key!r} not found")


class StateError(CrmError):
    """An operation that the record's current state does not allow."""

    code = "invalid_state"

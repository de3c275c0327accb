"""Conversion failures as values: a field path and a message a user can act on."""

from __future__ import annotations

from ferry_schemas.bus import ConversionError


class ConversionFailure(Exception):
    """Raised inside the pure conversion, caught at its edge and turned into a ConversionError."""

    def __init__(self, field: str, message: str, reason: str = "ConversionFailed") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.reason = reason

    def to_error(self) -> ConversionError:
        return ConversionError(field=self.field, message=self.message, reason=self.reason)

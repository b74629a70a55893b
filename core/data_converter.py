"""How our clients and workers turn Temporal payloads back into our dataclasses: as the SDK does, with each
class' type hints resolved once.

The SDK's JSON decoding calls `typing.get_type_hints` on every dataclass it builds, every time; with postponed
annotations that evaluates each field's annotation string again, for every activity input and result and every
workflow argument: 4.7 % of a worker's CPU in figure 4's profile. The bytes on the wire are unchanged, so a
client or worker without this converter reads and writes the same payloads.
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from typing import Any

from temporalio.converter import (
    CompositePayloadConverter,
    DataConverter,
    DefaultPayloadConverter,
    JSONPlainPayloadConverter,
    JSONTypeConverter,
    value_to_type,
)


@dataclasses.dataclass(frozen=True)
class FieldType:
    name: str
    hint: Any
    init: bool


@functools.cache
def dataclass_fields(cls: type) -> tuple[FieldType, ...]:
    """A dataclass' fields with their resolved type hints, worked out once per class."""
    hints = typing.get_type_hints(cls)
    return tuple(FieldType(field.name, hints[field.name], field.init) for field in dataclasses.fields(cls))


class DataclassesWithKnownHints(JSONTypeConverter):
    """Builds dataclasses exactly as the SDK's `value_to_type` does (unknown keys ignored, a missing required field
    refused by the constructor, `init=False` fields set afterwards), from cached type hints."""

    def to_typed_value(self, hint: type, value: Any) -> Any:
        if not (isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict)):
            return JSONTypeConverter.Unhandled  # the SDK's own rules, errors included
        given: dict[str, Any] = {}
        set_after: dict[str, Any] = {}
        for field in dataclass_fields(hint):
            if field.name not in value:
                continue
            try:
                converted = value_to_type(field.hint, value[field.name], [self])
            except Exception as error:
                raise TypeError(f"Failed converting field {field.name} on dataclass {hint}") from error
            (given if field.init else set_after)[field.name] = converted
        made = hint(**given)
        for name, converted in set_after.items():
            object.__setattr__(made, name, converted)  # as the SDK does, frozen dataclasses included
        return made


class PayloadConverter(CompositePayloadConverter):
    """The SDK's default converters, its JSON one taught `DataclassesWithKnownHints`."""

    def __init__(self) -> None:
        json = JSONPlainPayloadConverter(custom_type_converters=[DataclassesWithKnownHints()])
        super().__init__(
            *(
                json if isinstance(converter, JSONPlainPayloadConverter) else converter
                for converter in DefaultPayloadConverter.default_encoding_payload_converters
            )
        )


DATA_CONVERTER = dataclasses.replace(DataConverter.default, payload_converter_class=PayloadConverter)

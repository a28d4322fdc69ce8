import uuid
from typing import Any

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from common.encoding import b64u_decode, b64u_encode


@extend_schema_field(OpenApiTypes.STR)
class B64uField(serializers.Field):
    """Bytes travelling as unpadded base64url, optionally of an exact length."""

    default_error_messages = {
        "invalid": "Must be unpadded base64url.",
        "length": "Must decode to {length} bytes.",
        "max_length": "Must decode to at most {max_length} bytes.",
        "min_length": "Must decode to at least {min_length} bytes.",
    }

    def __init__(
        self,
        *,
        length: int | None = None,
        min_length: int | None = None,
        max_length: int | None = None,
        **kwargs: Any,
    ) -> None:
        self.length = length
        self.min_length = min_length
        self.max_length = max_length
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> bytes:
        if not isinstance(data, str):
            self.fail("invalid")
        if self.max_length is not None and len(data) > (self.max_length * 4 + 2) // 3:
            self.fail("max_length", max_length=self.max_length)
        try:
            value = b64u_decode(data)
        except ValueError:
            self.fail("invalid")
        if self.length is not None and len(value) != self.length:
            self.fail("length", length=self.length)
        if self.max_length is not None and len(value) > self.max_length:
            self.fail("max_length", max_length=self.max_length)
        if self.min_length is not None and len(value) < self.min_length:
            self.fail("min_length", min_length=self.min_length)
        return value

    def to_representation(self, value: bytes | memoryview) -> str:
        return b64u_encode(bytes(value))


def uuid_keyed_b64u_map(
    value: Any,
    *,
    name: str,
    length: int | None = None,
    min_length: int | None = None,
    max_length: int | None = None,
) -> dict[str, str]:
    """{uuid: b64u bytes within the given lengths}, keys canonicalised to lower case."""
    if not isinstance(value, dict):
        raise serializers.ValidationError(f"{name} must be an object.")
    checker = B64uField(length=length, min_length=min_length, max_length=max_length)
    result: dict[str, str] = {}
    for key, item in value.items():
        try:
            canonical = str(uuid.UUID(str(key)))
        except ValueError as exc:
            raise serializers.ValidationError({key: "Not an id."}) from exc
        try:
            checker.to_internal_value(item)
        except serializers.ValidationError as exc:
            raise serializers.ValidationError({key: exc.detail}) from exc
        result[canonical] = item
    return result

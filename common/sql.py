"""Hand-written SQL for the few hot paths where building ORM queries costs more than
running them (docs/performance.md). Portable between SQLite and PostgreSQL: names
and values go through Django's own quoting and field conversions, so a statement
here reads and writes exactly what the ORM would.
"""

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from django.db import connection, models


def table(model: type[models.Model]) -> str:
    return connection.ops.quote_name(model._meta.db_table)


def field(model: type[models.Model], field_name: str) -> "models.Field[Any, Any]":
    found = model._meta.get_field(field_name)
    if not isinstance(found, models.Field):
        raise TypeError(f"{model.__name__}.{field_name} is a relation's other side")
    return found


def column(model: type[models.Model], field_name: str) -> str:
    name = field(model, field_name).column
    if name is None:
        raise TypeError(f"{model.__name__}.{field_name} has no column")
    return connection.ops.quote_name(name)


def db_value(model: type[models.Model], field_name: str, value: Any) -> Any:
    """``value`` as the database stores it in that field (a UUID as hex on SQLite, a
    JSON document as JSON, bytes as a blob)."""
    return field(model, field_name).get_db_prep_save(value, connection)


def as_uuid(value: Any) -> uuid.UUID:
    """A UUID column as read back: a UUID on PostgreSQL, 32 hex digits on SQLite."""
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def null_uuid() -> str:
    """A NULL typed as a UUID column, for a UNION branch that has no id there:
    PostgreSQL resolves an untyped NULL against a NULL as text, not uuid."""
    return f"CAST(NULL AS {connection.data_types['UUIDField']})"


def insert_sql(model: type[models.Model], field_names: Sequence[str]) -> str:
    columns = ", ".join(column(model, name) for name in field_names)
    placeholders = ", ".join(["%s"] * len(field_names))
    return f"INSERT INTO {table(model)} ({columns}) VALUES ({placeholders})"  # noqa: S608


def insert_values(
    model: type[models.Model], field_names: Sequence[str], values: Iterable[Any]
) -> list[Any]:
    return [db_value(model, name, value) for name, value in zip(field_names, values, strict=True)]

"""users_by_name: per name, the latest `users` record (all fields of its schema version) and schema id."""

from __future__ import annotations

from tables.base import define_table

__all__ = ["users_by_name"]

users_by_name = define_table(
    "users-by-name",
    help="name -> {name, age, schema_id, record: {field: value}, ts, src}",
)

"""Django's SQLite backend, with a flush that respects the audit log's guards.

Flushing (tests, ``manage.py flush``) empties every table with ``DELETE``; the
moderation audit log refuses ``DELETE`` with a trigger (moderation.db). The flush
lifts that trigger and puts it back in the same transaction.
"""

from typing import Any

from django.db.backends.sqlite3 import base, operations


class DatabaseOperations(operations.DatabaseOperations):
    def sql_flush(
        self, style: Any, tables: Any, *, reset_sequences: bool = False, allow_cascade: bool = False
    ) -> list[str]:
        from moderation import db as audit

        sql: list[str] = super().sql_flush(
            style, tables, reset_sequences=reset_sequences, allow_cascade=allow_cascade
        )
        if any(audit.AUDIT_TABLE in statement for statement in sql):
            return [audit.SQLITE_DROP_NO_DELETE, *sql, audit.SQLITE_NO_DELETE]
        return sql


class DatabaseWrapper(base.DatabaseWrapper):
    ops_class = DatabaseOperations

"""Database guards that make the moderation audit log append-only.

PostgreSQL (production) refuses every ``UPDATE`` and ``DELETE`` of a row with a
trigger. SQLite (the embedded default) has the same two triggers; its flush (which
SQLite does with ``DELETE``) lifts the delete guard for the length of the flush only
(``common.sqlite``), as ``TRUNCATE`` passes by on PostgreSQL: wiping the whole
database is the operator's, never a row's.

SQLite drops a table's triggers when a migration rebuilds the table: a migration that
alters this table must run ``SQLITE_CREATE`` again. A test checks the guards.
"""

AUDIT_TABLE = "moderation_moderationaction"
REFUSAL = "the moderation audit log is append-only"

POSTGRES_CREATE = [
    f"""
    CREATE OR REPLACE FUNCTION moderation_audit_append_only() RETURNS trigger
    LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION '{REFUSAL}' USING ERRCODE = 'insufficient_privilege';
    END
    $$;
    """,
    f"""
    CREATE TRIGGER moderation_audit_append_only
    BEFORE UPDATE OR DELETE ON {AUDIT_TABLE}
    FOR EACH ROW EXECUTE FUNCTION moderation_audit_append_only();
    """,
]
POSTGRES_DROP = [
    f"DROP TRIGGER IF EXISTS moderation_audit_append_only ON {AUDIT_TABLE};",
    "DROP FUNCTION IF EXISTS moderation_audit_append_only();",
]

SQLITE_NO_UPDATE = (
    f"CREATE TRIGGER moderation_audit_no_update BEFORE UPDATE ON {AUDIT_TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END;"
)
SQLITE_NO_DELETE = (
    f"CREATE TRIGGER moderation_audit_no_delete BEFORE DELETE ON {AUDIT_TABLE} "
    f"BEGIN SELECT RAISE(ABORT, '{REFUSAL}'); END;"
)
SQLITE_DROP_NO_DELETE = "DROP TRIGGER IF EXISTS moderation_audit_no_delete;"
SQLITE_CREATE = [SQLITE_NO_UPDATE, SQLITE_NO_DELETE]
SQLITE_DROP = ["DROP TRIGGER IF EXISTS moderation_audit_no_update;", SQLITE_DROP_NO_DELETE]

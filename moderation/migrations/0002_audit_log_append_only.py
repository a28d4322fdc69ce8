"""The audit log refuses UPDATE and DELETE in the database too (moderation.db)."""

from django.db import migrations

from moderation import db as audit


def _create(apps, schema_editor):
    statements = {"postgresql": audit.POSTGRES_CREATE, "sqlite": audit.SQLITE_CREATE}
    for statement in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement)


def _drop(apps, schema_editor):
    statements = {"postgresql": audit.POSTGRES_DROP, "sqlite": audit.SQLITE_DROP}
    for statement in statements.get(schema_editor.connection.vendor, []):
        schema_editor.execute(statement)


class Migration(migrations.Migration):
    dependencies = [("moderation", "0001_initial")]

    operations = [migrations.RunPython(_create, _drop)]

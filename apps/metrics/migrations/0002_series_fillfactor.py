"""Series rows are updated every scrape (a counter's last raw value): on PostgreSQL leave room in each page so the
update stays on the page (a HOT update, no index entry written)."""

from django.db import migrations


def fillfactor(apps, schema_editor, value: int) -> None:
    if schema_editor.connection.vendor == "postgresql":
        table = apps.get_model("metrics", "Series")._meta.db_table
        schema_editor.execute(f"ALTER TABLE {schema_editor.quote_name(table)} SET (fillfactor = {int(value)})")


class Migration(migrations.Migration):
    dependencies = [("metrics", "0001_initial")]

    operations = [
        migrations.RunPython(
            lambda apps, editor: fillfactor(apps, editor, 70), lambda apps, editor: fillfactor(apps, editor, 100)
        )
    ]

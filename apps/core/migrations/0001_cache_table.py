from django.core.management import call_command
from django.db import migrations


def create_cache_table(apps, schema_editor):
    """The table behind the database cache (rate limits shared by every web process when there is no Redis)."""
    call_command("createcachetable", database=schema_editor.connection.alias, verbosity=0)


class Migration(migrations.Migration):
    dependencies: list = []

    operations = [migrations.RunPython(create_cache_table, migrations.RunPython.noop)]

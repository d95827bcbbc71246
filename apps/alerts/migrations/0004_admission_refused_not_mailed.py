"""A refused write is answered on its form: the default admission_refused rule shows its incident without mailing
it (staff can turn mail back on)."""

from django.db import migrations


def quiet(apps, schema_editor):
    AlertRule = apps.get_model("alerts", "AlertRule")
    AlertRule.objects.filter(kind="admission_refused", team=None, application=None, cluster=None).update(email=False)


def loud(apps, schema_editor):
    AlertRule = apps.get_model("alerts", "AlertRule")
    AlertRule.objects.filter(kind="admission_refused", team=None, application=None, cluster=None).update(email=True)


class Migration(migrations.Migration):
    dependencies = [("alerts", "0003_shared_incidents")]

    operations = [migrations.RunPython(quiet, loud)]

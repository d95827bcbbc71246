from django.db import migrations

KINDS = [
    "app_failed",
    "crash_loop",
    "push_failed",
    "cluster_unreachable",
    "drift",
    "quota_high",
    "admission_refused",
    "idle_gpu",
    "cache_thrash",
    "compaction_waiting",
]


def default_rules(apps, schema_editor):
    AlertRule = apps.get_model("alerts", "AlertRule")
    have = set(AlertRule.objects.filter(team=None, application=None, cluster=None).values_list("kind", flat=True))
    AlertRule.objects.bulk_create([AlertRule(kind=k) for k in KINDS if k not in have])


class Migration(migrations.Migration):
    dependencies = [("alerts", "0001_initial")]

    operations = [migrations.RunPython(default_rules, migrations.RunPython.noop)]

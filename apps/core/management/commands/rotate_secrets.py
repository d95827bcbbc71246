"""Re-encrypt every stored secret with the newest key of FIELD_ENCRYPTION_KEYS (then the old key can go)."""

from __future__ import annotations

from django.apps import apps
from django.core.management.base import BaseCommand
from django.db import transaction

from apps.core.secrets import EncryptedTextField


class Command(BaseCommand):
    help = "Re-encrypt secrets at rest with the first (newest) key in FIELD_ENCRYPTION_KEYS."

    def handle(self, *args, **options):
        total = 0
        for model in apps.get_models():
            fields = [f.name for f in model._meta.get_fields() if isinstance(f, EncryptedTextField)]
            if not fields:
                continue
            with transaction.atomic():
                for obj in model.objects.select_for_update().all():
                    obj.save(update_fields=fields)  # decrypted with any key on read, encrypted with the newest
                    total += 1
        self.stdout.write(self.style.SUCCESS(f"re-encrypted the secrets of {total} rows with the newest key"))

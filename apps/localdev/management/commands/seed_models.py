from __future__ import annotations

from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.management.base import BaseCommand


def write_models(directory: Path, count: int, dim: int = 16) -> list[Path]:
    """Small real models: seeded random weight vectors, one .npy file per model id."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(1, count + 1):
        rng = np.random.default_rng(i)
        path = directory / f"model-{i}.npy"
        np.save(path, rng.normal(size=dim))
        paths.append(path)
    return paths


class Command(BaseCommand):
    help = "Write the demo multiplexed models (numpy weight files) under var/models/."

    def add_arguments(self, parser):
        parser.add_argument("--count", type=int, default=8)
        parser.add_argument("--dir", default=str(Path(settings.BASE_DIR) / "var" / "models"))

    def handle(self, *args, **options):
        paths = write_models(Path(options["dir"]), options["count"])
        self.stdout.write(f"wrote {len(paths)} models to {options['dir']}")

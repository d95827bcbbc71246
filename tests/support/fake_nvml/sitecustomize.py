"""Loaded by every Python process of a Ray node started with this folder first on PYTHONPATH. When
``CP_FAKE_NVML`` names a JSON file, Ray's vendored NVML binding (``ray._private.thirdparty.pynvml``, the one import
Ray's GPU reporter makes) resolves to ``cp_fake_pynvml`` instead, so that Ray's own reporter code writes its GPU
metrics, names, labels and units from the GPUs and processes the file describes. Nothing else changes."""

from __future__ import annotations

import importlib.abc
import importlib.util
import os
import sys

_TARGET = "ray._private.thirdparty.pynvml"


class _FakeNvmlFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path, target=None):  # noqa: ANN001, ANN201 - the import protocol's signature
        if fullname != _TARGET:
            return None
        here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cp_fake_pynvml.py")
        return importlib.util.spec_from_file_location(fullname, here)


if os.environ.get("CP_FAKE_NVML"):
    sys.meta_path.insert(0, _FakeNvmlFinder())

"""A stand-in for NVML with the calls Ray 2.60's GPU reporter makes (``gpu_providers.NvidiaGpuProvider``), answering
from the JSON file named by ``CP_FAKE_NVML``, read at every call so a test can change what the GPUs do:

    {"<metrics export port of the node>": {"gpus": [
        {"index": 0, "name": "NVIDIA H100 80GB HBM3", "uuid": "GPU-...", "memory_total_mib": 81559,
         "utilization": 40, "other_mib": 500, "power_mw": 310000, "temperature_c": 54,
         "processes": [{"pid": 1234, "memory_mib": 61440, "sm": 35}]}]}}

A node finds its entry by the ``--metrics-export-port`` its dashboard agent was started with; a node without one
has NVML but no GPU. Memory used on a GPU is its processes' memory plus ``other_mib``.
"""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

NVML_TEMPERATURE_GPU = 0
_MIB = 1024 * 1024


class NVMLError(Exception):
    pass


class NVMLError_NotSupported(NVMLError):  # noqa: N801 - NVML's own name
    pass


def _port() -> str:
    for i, arg in enumerate(sys.argv):
        if arg.startswith("--metrics-export-port="):
            return arg.split("=", 1)[1]
        if arg == "--metrics-export-port" and i + 1 < len(sys.argv):
            return sys.argv[i + 1]
    return ""


def _gpus() -> list[dict]:
    try:
        with open(os.environ["CP_FAKE_NVML"]) as f:
            data = json.load(f)
    except (OSError, ValueError, KeyError):
        return []
    return list((data.get(_port()) or {}).get("gpus") or [])


def _gpu(handle: int) -> dict:
    gpus = _gpus()
    if handle >= len(gpus):
        raise NVMLError("GPU is lost")
    return gpus[handle]


def nvmlInit() -> None:  # noqa: N802 - NVML's names
    if "CP_FAKE_NVML" not in os.environ:
        raise NVMLError("Driver Not Loaded")


def nvmlShutdown() -> None:  # noqa: N802
    return None


def nvmlDeviceGetCount() -> int:  # noqa: N802
    return len(_gpus())


def nvmlDeviceGetHandleByIndex(index: int) -> int:  # noqa: N802
    return index


def nvmlDeviceGetMigMode(handle: int):  # noqa: N802, ANN201
    raise NVMLError_NotSupported("MIG is not supported")


def nvmlDeviceGetName(handle: int) -> str:  # noqa: N802
    return _gpu(handle).get("name", "NVIDIA Fake")


def nvmlDeviceGetUUID(handle: int) -> str:  # noqa: N802
    return _gpu(handle).get("uuid", f"GPU-fake-{handle}")


def nvmlDeviceGetMemoryInfo(handle: int) -> SimpleNamespace:  # noqa: N802
    g = _gpu(handle)
    used = sum(p["memory_mib"] for p in g.get("processes", [])) + g.get("other_mib", 0)
    total = g.get("memory_total_mib", 81559)
    return SimpleNamespace(total=total * _MIB, used=used * _MIB, free=(total - used) * _MIB)


def nvmlDeviceGetUtilizationRates(handle: int) -> SimpleNamespace:  # noqa: N802
    return SimpleNamespace(gpu=_gpu(handle).get("utilization", 0), memory=0)


def nvmlDeviceGetComputeRunningProcesses(handle: int) -> list[SimpleNamespace]:  # noqa: N802
    return [SimpleNamespace(pid=p["pid"], usedGpuMemory=p["memory_mib"] * _MIB) for p in _gpu(handle)["processes"]]


def nvmlDeviceGetGraphicsRunningProcesses(handle: int) -> list:  # noqa: N802
    return []


def nvmlDeviceGetProcessesUtilizationInfo(handle: int, last_seen_ts: int) -> list[SimpleNamespace]:  # noqa: N802
    return [SimpleNamespace(pid=p["pid"], smUtil=p.get("sm", 0)) for p in _gpu(handle)["processes"]]


def nvmlDeviceGetPowerUsage(handle: int) -> int:  # noqa: N802
    return _gpu(handle).get("power_mw", 0)


def nvmlDeviceGetTemperature(handle: int, sensor: int) -> int:  # noqa: N802
    return _gpu(handle).get("temperature_c", 0)

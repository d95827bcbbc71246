"""The local Ray harness stops every process of its cluster, including Ray's client server, which names only the
GCS address and outlives the process that started it."""

from __future__ import annotations

import subprocess
import sys
import time

from apps.localdev.local_ray import LocalRayCluster, _alive


def test_stop_finds_a_process_named_only_by_its_gcs_address_and_no_other_clusters(tmp_path):
    ours = LocalRayCluster(temp_dir=str(tmp_path / "ray-ours"), gcs_port=16391)
    theirs = LocalRayCluster(temp_dir=str(tmp_path / "ray-theirs"), gcs_port=16392)
    sleeper = "import time; time.sleep(60)"
    mine = subprocess.Popen([sys.executable, "-c", sleeper, "--address=192.0.2.2:16391", "--port=10001"])
    other = subprocess.Popen([sys.executable, "-c", sleeper, "--address=192.0.2.2:16392", "--port=10001"])
    try:
        time.sleep(0.3)
        assert mine.pid in ours._pids() and other.pid not in ours._pids()
        assert ours.stop(timeout=2) >= 1
        mine.wait(timeout=5)
        assert not _alive(mine.pid) and _alive(other.pid), "only this cluster's processes are stopped"
        assert other.pid in theirs._pids()
    finally:
        for proc in (mine, other):
            proc.kill()
            proc.wait(timeout=5)

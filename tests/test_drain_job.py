"""The drain job survives a slow dashboard: submitted once, followed through dropped answers."""

from __future__ import annotations

import json
import shlex

import pytest

from workers.clients import ray_gcs
from workers.clients.ray_dashboard import RayRejected, RayUnavailable


class SlowDashboard:
    """A dashboard whose first submit answer is lost (the job is created anyway) and whose polls drop some answers."""

    def __init__(self, drop_submit: bool = True, drop_polls: int = 2, final: str = "SUCCEEDED") -> None:
        self.jobs: dict[str, dict] = {}
        self.drop_submit = drop_submit
        self.drop_polls = drop_polls
        self.final = final
        self.submits = 0
        self.polls = 0

    def submit_job(self, body: dict) -> dict:
        self.submits += 1
        sid = body["submission_id"]
        if sid in self.jobs:
            raise RayRejected(400, f"Job with submission_id {sid} already exists.")
        args = json.loads(shlex.split(body["entrypoint"].rsplit("-c ", 1)[1])[1])
        self.jobs[sid] = {"status": "PENDING", "nodes": args["nodes"]}
        if self.drop_submit:
            self.drop_submit = False
            raise RayUnavailable("Ray dashboard at http://ray did not answer within 10 s")
        return {"submission_id": sid}

    def job_status(self, sid: str) -> dict:
        if sid not in self.jobs:
            raise RayRejected(404, "not found")
        self.polls += 1
        if self.polls > 1 and self.drop_polls:
            self.drop_polls -= 1
            raise RayUnavailable("Ray dashboard at http://ray did not answer within 10 s")
        if self.polls >= 3:
            self.jobs[sid]["status"] = self.final
        return {"status": self.jobs[sid]["status"], "message": ""}

    def job_logs(self, sid: str) -> str:
        nodes = self.jobs[sid]["nodes"]
        return "".join("DRAIN " + json.dumps({"node": n, "accepted": True, "error": ""}) + "\n" for n in nodes)


def test_a_lost_submit_answer_and_dropped_polls_still_drain_once(monkeypatch):
    dash = SlowDashboard()
    sid = ray_gcs.drain_nodes_via_job(dash, node_ids=["n1", "n2"], reason_message="plan 1", poll_s=0)
    assert list(dash.jobs) == [sid], "exactly one job was created"
    assert dash.submits == 1, "the job that existed after the lost answer was not submitted again"


def test_a_job_that_never_finishes_times_out_with_the_last_answer():
    dash = SlowDashboard(drop_submit=False, drop_polls=0, final="RUNNING")
    with pytest.raises(ray_gcs.DrainError, match="did not finish within 0 s"):
        ray_gcs.drain_nodes_via_job(dash, node_ids=["n1"], reason_message="plan 1", timeout_s=0, poll_s=0)


def test_a_refused_submission_is_reported():
    class Refusing(SlowDashboard):
        def submit_job(self, body: dict) -> dict:
            raise RayRejected(400, "entrypoint_num_cpus must be >= 0")

    with pytest.raises(ray_gcs.DrainError, match="refused the drain job"):
        ray_gcs.drain_nodes_via_job(Refusing(), node_ids=["n1"], reason_message="plan 1", poll_s=0)

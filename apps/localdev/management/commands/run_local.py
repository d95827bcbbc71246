"""Run everything on this machine: a local Ray cluster, web, Celery worker and beat, demo data and traffic.

Ctrl-C (or ``manage.py run_local --stop`` from another shell, which ``make stop`` calls) stops it all,
the Ray cluster included.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from apps.localdev.local_ray import DEMO

PIDFILE = Path(settings.VAR_DIR) / "run_local.pid"


def child_env(environ: Mapping[str, str], *, port: int, metrics_dir: Path) -> dict[str, str]:
    """What web, workers and beat run with: unbuffered output, one metrics directory, and links in mails and
    webhooks that lead to this dashboard (unless PUBLIC_URL says otherwise)."""
    env = dict(environ, PYTHONUNBUFFERED="1", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    env.setdefault("PUBLIC_URL", f"http://127.0.0.1:{port}")
    return env


class Command(BaseCommand):
    help = "Start the whole control plane locally (Ray cluster, web, worker, beat, demo data, traffic)."

    def add_arguments(self, parser):
        parser.add_argument("--port", type=int, default=int(os.environ.get("WEB_PORT", "8088")))
        parser.add_argument("--no-traffic", action="store_true")
        parser.add_argument("--stop", action="store_true", help="stop a run started from another shell")

    def handle(self, *args, **options):
        if options["stop"]:
            self._stop_other()
            return
        self.children: list[subprocess.Popen] = []
        PIDFILE.write_text(str(os.getpid()))
        signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            self._start(options)
            self._watch()
        except KeyboardInterrupt:
            pass
        finally:
            self._shutdown()

    def _say(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def _start(self, options: dict) -> None:
        call_command("migrate", verbosity=0)
        if DEMO.is_up():
            self._say(f"Ray cluster already up at {DEMO.dashboard_url}")
        else:
            DEMO.start(log=lambda m: self._say(f"  {m}"))
        call_command("seed_demo", stdout=self.stdout)
        python = sys.executable
        # Web, worker and beat count their metrics in one directory; /metrics adds every process up.
        metrics_dir = Path(settings.VAR_DIR) / "prometheus"
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)
        env = child_env(os.environ, port=options["port"], metrics_dir=metrics_dir)
        logs = Path(settings.VAR_DIR) / "logs"
        logs.mkdir(exist_ok=True)
        procs = {
            "web": [
                python,
                "-m",
                "gunicorn",
                "--config",
                "python:controlplane.gunicorn",  # as the image runs it (its log lines, its worker hooks)
                "controlplane.wsgi",
                "-b",
                f"127.0.0.1:{options['port']}",
                "-w",
                "2",
                "--threads",
                "4",
                "--timeout",
                "60",
            ],
            "worker": [
                python,
                "-m",
                "celery",
                "-A",
                "controlplane",
                "worker",
                "-P",
                "threads",
                "-c",
                "4",
                "--without-mingle",
                "--without-gossip",
                "-l",
                "INFO",
            ],
            "webhooks": [
                python,
                "-m",
                "celery",
                "-A",
                "controlplane",
                "worker",
                "-Q",
                "webhooks",
                "-n",
                "webhooks@%h",
                "-P",
                "threads",
                "-c",
                "4",
                "--without-mingle",
                "--without-gossip",
                "-l",
                "INFO",
            ],
            "beat": [
                python,
                "-m",
                "celery",
                "-A",
                "controlplane",
                "beat",
                "--schedule",
                str(Path(settings.VAR_DIR) / "celerybeat-schedule"),
                "-l",
                "INFO",
            ],
        }
        if not options["no_traffic"]:
            procs["traffic"] = [python, "manage.py", "traffic", "--rate", "4"]
        self.env = env
        self.specs = []
        for name, cmd in procs.items():
            log = open(logs / f"{name}.log", "ab")  # noqa: SIM115 - kept open for the child's lifetime
            self.specs.append((name, cmd, log))
            self.children.append(
                subprocess.Popen(
                    cmd, cwd=settings.BASE_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            )
            self._say(f"  started {name} (pid {self.children[-1].pid}, log var/logs/{name}.log)")
        password = os.environ.get("DEMO_ADMIN_PASSWORD", "demo-password-1")
        self._say(
            "\nControl plane running:\n"
            f"  dashboard  http://127.0.0.1:{options['port']}/   (log in as admin / {password})\n"
            f"  API docs   http://127.0.0.1:{options['port']}/api/docs/\n"
            f"  Ray        {DEMO.dashboard_url}   Serve {DEMO.serve_url}\n"
            f"  servectl   {Path(sys.executable).parent / 'servectl'}   (or `source .venv/bin/activate` once)\n"
            "Press Ctrl-C (or run `make stop`) to stop everything.\n"
        )

    def _watch(self) -> None:
        """Restart a process that exits (as a container's restart policy would); give up if it keeps failing."""
        restarts: list[float] = []
        while True:
            for i, child in enumerate(self.children):
                if child.poll() is None:
                    continue
                name, cmd, log = self.specs[i]
                restarts = [t for t in restarts if time.monotonic() - t < 60] + [time.monotonic()]
                if len(restarts) > 5:
                    self._say(f"{name} keeps exiting (code {child.returncode}); see var/logs/{name}.log. Stopping.")
                    return
                self._say(f"{name} exited (code {child.returncode}); restarting it. Log: var/logs/{name}.log")
                self.children[i] = subprocess.Popen(
                    cmd,
                    cwd=settings.BASE_DIR,
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            time.sleep(1)

    def _shutdown(self) -> None:
        self._say("stopping web, workers, beat and traffic…")
        for child in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for child in self.children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(child.pid, signal.SIGKILL)
        self._say("stopping the Ray cluster…")
        DEMO.stop()
        PIDFILE.unlink(missing_ok=True)
        self._say("stopped.")

    def _stop_other(self) -> None:
        if PIDFILE.exists():
            pid = int(PIDFILE.read_text().strip() or 0)
            try:
                os.kill(pid, signal.SIGTERM)
                self._say(f"asked run_local (pid {pid}) to stop")
                for _ in range(60):
                    time.sleep(0.5)
                    os.kill(pid, 0)
            except ProcessLookupError:
                pass
        if DEMO.stop():
            self._say("stopped leftover Ray processes")
        self._say("stopped.")

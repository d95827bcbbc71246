"""A real OpenID provider for the sign-on tests: panva/oidc-provider (``tests/support/oidc/provider.mjs``) run with
Node, behind a small reverse proxy that is the issuer's address, as a load balancer would be.

The proxy passes everything through unchanged. A test can make it act as an attacker or a slow network on the
token endpoint only: ``tamper`` rewrites the ID token's payload (granting a staff group) and keeps the provider's
signature; ``delay_s`` holds the token answer back, so a short-lived ID token arrives expired.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import requests

HERE = Path(__file__).parent / "oidc"
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "date", "server"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def node_ready() -> str | None:
    """Why the provider cannot run here, or None. Installs its npm packages (from package-lock.json) if missing."""
    if not shutil.which("node") or not shutil.which("npm"):
        return "Node.js and npm (apt-get install nodejs npm)"
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--prefix", str(HERE)], capture_output=True, text=True
        )
        if done.returncode != 0:
            return f"oidc-provider from npm (npm ci --prefix {HERE}: {done.stderr[-300:]})"
    return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def tamper_id_token(id_token: str, **changes: Any) -> str:
    header, payload, signature = id_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


class Provider:
    def __init__(
        self,
        clients: list[dict],
        accounts: dict[str, dict],
        id_token_ttl: dict[str, int],
        workdir: Path,
        conform_id_token_claims: bool = False,
    ) -> None:
        self.backend_port, self.port = free_port(), free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.tamper: dict[str, Any] | None = None
        self.delay_s = 0.0
        self.token_answers: list[dict] = []
        self.accounts_file = workdir / "accounts.json"
        self.set_accounts(accounts)
        env = dict(
            os.environ,
            OIDC_ISSUER=self.issuer,
            PORT=str(self.backend_port),
            OIDC_CLIENTS=json.dumps(clients),
            OIDC_ACCOUNTS_FILE=str(self.accounts_file),
            OIDC_ID_TOKEN_TTL=json.dumps(id_token_ttl),
            OIDC_CONFORM_ID_TOKEN_CLAIMS="true" if conform_id_token_claims else "false",
        )
        self.log_path = workdir / "provider.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ["node", str(HERE / "provider.mjs")], env=env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self._start_proxy()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if requests.get(self.issuer + "/.well-known/openid-configuration", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"oidc-provider did not start: {self.log_path.read_text()[-2000:]}")

    def set_accounts(self, accounts: dict[str, dict]) -> None:
        """The directory as the provider reads it at the next sign-in (groups may change between sign-ins)."""
        tmp = self.accounts_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(accounts))
        tmp.replace(self.accounts_file)

    def _start_proxy(self) -> None:
        outer = self
        backend = f"http://127.0.0.1:{self.backend_port}"

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                headers["X-Forwarded-Proto"] = "http"
                headers["X-Forwarded-Host"] = self.headers.get("Host", "")
                try:
                    resp = requests.request(
                        self.command, backend + self.path, headers=headers, data=body, allow_redirects=False, timeout=30
                    )
                except requests.RequestException:
                    self.send_error(502, "the provider is not answering")
                    return
                content = resp.content
                if self.path.split("?")[0] == "/token" and resp.ok:
                    answer = resp.json()
                    if outer.tamper and "id_token" in answer:
                        answer["id_token"] = tamper_id_token(answer["id_token"], **outer.tamper)
                        content = json.dumps(answer).encode()
                    outer.token_answers.append(answer)
                    if outer.delay_s:
                        time.sleep(outer.delay_s)
                self.send_response(resp.status_code)
                for key, value in resp.raw.headers.items():
                    if key.lower() not in HOP_BY_HOP:
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = _forward  # noqa: N815 - http.server's names

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()

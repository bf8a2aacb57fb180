"""Real Prometheus and Alertmanager for integration tests, and an Alertmanager webhook receiver.

`deploy/observability.sh` starts Debian's `prometheus` and `prometheus-alertmanager` (installing
them with apt-get when missing) with the repository's alert rules, scraping one worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.integration.harness import REPO, free_port

OBSERVABILITY = REPO / "deploy" / "observability.sh"


class Webhook:
    """Alertmanager's webhook receiver: collects the JSON bodies POSTed to /alerts."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = 404
                if self.path == "/alerts":
                    with hook.lock:
                        hook.bodies.append(json.loads(raw))
                    status = 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Webhook:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)

    def received(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.bodies)

    def alerts(self) -> list[dict[str, Any]]:
        """Every alert of every notification, as delivered."""
        return [alert for body in self.received() for alert in body.get("alerts", [])]


class Observability:
    """`deploy/observability.sh` with its own state dir and ports, scraping one worker."""

    def __init__(self, state_dir: Path, scrape_target: str, webhook_url: str, rules_for: str = "5s") -> None:
        self.prometheus_port = free_port()
        self.alertmanager_port = free_port()
        while self.alertmanager_port == self.prometheus_port:
            self.alertmanager_port = free_port()
        self.state_dir = state_dir
        self.env = {
            **os.environ,
            "SALESPULSE_LOCAL_DIR": str(state_dir),
            "PROMETHEUS_PORT": str(self.prometheus_port),
            "ALERTMANAGER_PORT": str(self.alertmanager_port),
            "SALESPULSE_SCRAPE_TARGET": scrape_target,
            "SCRAPE_INTERVAL": "1s",
            "SALESPULSE_RULES_FOR": rules_for,
            "ALERT_WEBHOOK_URL": webhook_url,
            "ALERT_GROUP_WAIT": "1s",
            "ALERT_GROUP_INTERVAL": "2s",
        }
        self.prometheus = f"http://127.0.0.1:{self.prometheus_port}"

    def run(self, command: str) -> None:
        # `up` may install the Debian packages first (a clean CI machine): minutes, not seconds.
        subprocess.run([str(OBSERVABILITY), command], env=self.env, check=True, timeout=900)

    def api(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.prometheus}{path}", timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def alerts(self) -> list[dict[str, Any]]:
        """Prometheus' pending and firing alerts."""
        return self.api("/api/v1/alerts")["alerts"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        return self.api("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))["result"]

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.state_dir / "observability" / "logs" / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def wait_until(probe: Any, timeout: float, what: str, diagnostics: Any) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = probe()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{safe(diagnostics)}")


def safe(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # diagnostics only: never hide the real failure
        return f"({type(exc).__name__}: {exc})"

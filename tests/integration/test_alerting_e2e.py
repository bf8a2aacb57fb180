"""Alerting end to end on real parts: an overdue lead pages its team, a touched lead pages nobody.

A salespulse worker reads the test's topics on the session's broker; a real Prometheus (Debian's
`prometheus`) scrapes its /metrics every second with the repo's alert rules loaded (every `for:`
shortened to 5 s), and a real Alertmanager (Debian's `prometheus-alertmanager`) delivers to a
webhook receiver run by this test. Both are started and stopped by `deploy/observability.sh`,
which installs the packages with apt-get when they are missing.

Two leads are created live, one per team; only team-fast's lead gets a first human touch (an
outbound call). With a 5 s SLA the untouched lead breaches: the worker's overdue gauge says 1
for team-slow, one `lead.response_sla_breached` CloudEvent lands on the alerts topic, Prometheus
fires `LeadsOverdue{team="team-slow"}` and Alertmanager posts it to the webhook. Nothing ever
names team-fast.
"""

from __future__ import annotations

import asyncio
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

import pytest

from tests.integration.harness import (
    REPO,
    Worker,
    cloudevent,
    create_topics,
    free_port,
    produce,
    read_topic,
    topic_set,
    unique,
    value,
)

pytestmark = pytest.mark.integration

SLA = 5
RULES_FOR = "5s"
ALERT_TIMEOUT = 90.0
# After the team-slow alert arrived: long enough for any alert of the same evaluation (or a few
# evaluations later) to be grouped, waited for (group_wait 1 s) and posted too.
SETTLE_SECONDS = 6.0
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

    def __init__(self, state_dir: Path, scrape_target: str, webhook_url: str) -> None:
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
            "SALESPULSE_RULES_FOR": RULES_FOR,
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


def names(alert: dict[str, Any], team: str) -> bool:
    """Whether an alert (webhook or Prometheus API form) speaks about ``team`` anywhere."""
    return team in json.dumps({"labels": alert.get("labels"), "annotations": alert.get("annotations")})


def test_overdue_lead_pages_its_team_through_prometheus_and_alertmanager(
        bootstrap: str, log_dir: Path) -> None:
    topics = topic_set(unique("alert"))
    alerts_topic = topics["activities"].replace("activities", "alerts")
    asyncio.run(create_topics(bootstrap, topics.values()))
    asyncio.run(create_topics(bootstrap, [alerts_topic], partitions=1))
    suffix = unique("lead")
    lead_a, lead_b = f"{suffix}-a", f"{suffix}-b"

    with Webhook() as webhook:
        worker = Worker(bootstrap, unique("app"), topics, log_dir,
                        SALESPULSE_LEAD_SLA_SECONDS=str(SLA), SALESPULSE_ALERTS_TOPIC=alerts_topic)
        obs: Observability | None = None
        try:
            worker.start()
            # Ports picked once the worker holds its own.
            obs = Observability(log_dir / "local", f"127.0.0.1:{worker.port}", webhook.url)
            obs.run("up")
            _wait(lambda: [r for r in obs.query('up{job="salespulse"}') if r["value"][1] == "1"],
                  30, "Prometheus scraping the worker", lambda: obs.api("/api/v1/targets"))

            now = time.time()
            created_a = cloudevent("lead.created", {"lead_id": lead_a, "rep_id": "rep-1",
                                                    "team_id": "team-slow"}, t=now)
            records = [
                (topics["leads"], lead_a.encode(), created_a, []),
                (topics["leads"], lead_b.encode(), cloudevent(
                    "lead.created", {"lead_id": lead_b, "rep_id": "rep-2", "team_id": "team-fast"},
                    t=now), []),
                # The first human touch for B, right away: an outbound call (a voicemail counts).
                (topics["activities"], lead_b.encode(), cloudevent(
                    "call.completed", {"lead_id": lead_b, "rep_id": "rep-2", "team_id": "team-fast",
                                       "direction": "outbound", "outcome": "voicemail"}, t=now), []),
            ]
            asyncio.run(produce(bootstrap, records))

            def slow_firing() -> list[dict[str, Any]]:
                return [a for a in webhook.alerts() if a.get("status") == "firing"
                        and a["labels"].get("alertname") == "LeadsOverdue"
                        and a["labels"].get("team") == "team-slow"]

            def diagnostics() -> str:
                lines = [ln for ln in _metrics_text(worker).splitlines()
                         if ln.startswith(("salespulse_team_leads_", "salespulse_team_lead_oldest",
                                           "salespulse_lead_sla", "salespulse_lead_alerts",
                                           "salespulse_events_processed", "salespulse_consumer_lag"))]
                return ("worker /metrics (leads):\n" + "\n".join(lines)
                        + f"\nprometheus alerts: {_safe(obs.alerts)}"
                        + f"\nwebhook bodies: {webhook.received()}"
                        + f"\nworker log:\n{worker.log_tail(30)}"
                        + f"\nprometheus log:\n{obs.log_tail('prometheus', 15)}"
                        + f"\nalertmanager log:\n{obs.log_tail('alertmanager', 15)}")

            firing = _wait(slow_firing, ALERT_TIMEOUT,
                           "LeadsOverdue{team=team-slow} delivered to the webhook", diagnostics)
            delivered_after = time.time() - now
            print(f"LeadsOverdue(team-slow) at the webhook {delivered_after:.1f} s after the leads")
            time.sleep(SETTLE_SECONDS)

            # The webhook: team-slow's alert, in plain words, and nothing about team-fast.
            alert = firing[0]
            assert alert["labels"]["severity"] == "warning"
            assert alert["labels"]["audience"] == "sales"
            summary, description = alert["annotations"]["summary"], alert["annotations"]["description"]
            assert "team-slow" in summary and "1 lead " in summary, summary
            assert "team-slow" in description, description
            assert f"of {SLA}s" in description, description  # the SLA, from salespulse_lead_sla_seconds
            bodies = webhook.received()
            assert all(body["version"] == "4" for body in bodies), bodies
            assert not [a for a in webhook.alerts() if names(a, "team-fast")], bodies

            # Prometheus: team-slow's alert firing, nothing pending or firing for team-fast.
            in_prometheus = obs.alerts()
            assert [a for a in in_prometheus if a["labels"].get("alertname") == "LeadsOverdue"
                    and a["labels"].get("team") == "team-slow" and a["state"] == "firing"], in_prometheus
            assert not [a for a in in_prometheus if names(a, "team-fast")], in_prometheus

            # The worker's own gauges.
            samples = worker.metrics()
            assert value(samples, "salespulse_team_leads_overdue", team="team-slow") == 1
            assert value(samples, "salespulse_team_leads_awaiting_response", team="team-slow") == 1
            assert value(samples, "salespulse_team_leads_overdue", team="team-fast") in (None, 0)
            assert value(samples, "salespulse_team_leads_awaiting_response", team="team-fast") in (None, 0)
            assert value(samples, "salespulse_lead_sla_seconds") == SLA
            assert value(samples, "salespulse_lead_alerts_sent_total") == 1

            # The alerts topic: exactly one breach, lead A's, and none for B.
            breaches = [json.loads(r.value) for r in asyncio.run(read_topic(bootstrap, alerts_topic))]
            assert len(breaches) == 1, breaches
            breach = breaches[0]
            assert breach["type"] == "lead.response_sla_breached"
            assert breach["id"] == f"lead.response_sla_breached:{lead_a}"
            data = breach["data"]
            assert {k: data[k] for k in ("lead_id", "rep_id", "team_id", "created_time", "sla_seconds")} == {
                "lead_id": lead_a, "rep_id": "rep-1", "team_id": "team-slow",
                "created_time": json.loads(created_a)["time"], "sla_seconds": SLA,
            }
            assert SLA < data["waited_seconds"] < delivered_after + 1, data
            assert lead_b not in json.dumps(breaches)
        finally:
            try:
                if obs is not None:
                    obs.run("down")
            finally:
                worker.stop()


def _wait(probe: Any, timeout: float, what: str, diagnostics: Any) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = probe()
        except OSError:
            found = None
        if found:
            return found
        time.sleep(0.25)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}\n{_safe(diagnostics)}")


def _safe(fn: Any) -> Any:
    try:
        return fn()
    except Exception as exc:  # diagnostics only: never hide the real failure
        return f"({type(exc).__name__}: {exc})"


def _metrics_text(worker: Worker) -> str:
    try:
        return worker.metrics_text()
    except OSError as exc:
        return f"(no /metrics: {exc})"

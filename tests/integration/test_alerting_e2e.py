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
import time
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import (
    Worker,
    cloudevent,
    create_topics,
    produce,
    read_topic,
    topic_set,
    unique,
    value,
)
from tests.integration.observability import Observability, Webhook, safe, wait_until

pytestmark = pytest.mark.integration

SLA = 5
RULES_FOR = "5s"
ALERT_TIMEOUT = 90.0
# After the team-slow alert arrived: long enough for any alert of the same evaluation (or a few
# evaluations later) to be grouped, waited for (group_wait 1 s) and posted too.
SETTLE_SECONDS = 6.0


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
            obs = Observability(log_dir / "local", f"127.0.0.1:{worker.port}", webhook.url, RULES_FOR)
            obs.run("up")
            wait_until(lambda: [r for r in obs.query('up{job="salespulse"}') if r["value"][1] == "1"],
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
                        + f"\nprometheus alerts: {safe(obs.alerts)}"
                        + f"\nwebhook bodies: {webhook.received()}"
                        + f"\nworker log:\n{worker.log_tail(30)}"
                        + f"\nprometheus log:\n{obs.log_tail('prometheus', 15)}"
                        + f"\nalertmanager log:\n{obs.log_tail('alertmanager', 15)}")

            firing = wait_until(slow_firing, ALERT_TIMEOUT,
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


def _metrics_text(worker: Worker) -> str:
    try:
        return worker.metrics_text()
    except OSError as exc:
        return f"(no /metrics: {exc})"

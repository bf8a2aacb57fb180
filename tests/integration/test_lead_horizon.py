"""Leads and alerts stay bounded on the real broker: a lead nobody answers is forgotten a wait
horizon after its creation (event time), and the alerts topic, the alert ledger, keeps its
alerts for longer than that.

A worker with a short wait horizon (SALESPULSE_LEAD_WAIT_HORIZON_SECONDS) pages an untouched
lead once; events that move its partition's watermark past the horizon make it disappear from
the gauges and count it in ``salespulse_leads_expired_total``; after a SIGKILL and a restart it
is neither back in the gauges nor paged again. The worker created the alerts topic itself, with
a retention of the horizon plus a day.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.app import ensure_topics
from tests.integration.harness import (
    Worker,
    cloudevent,
    create_topics,
    produce,
    read_topic,
    topic_set,
    topic_settings,
    unique,
    value,
)

pytestmark = pytest.mark.integration

SLA = 3.0
HORIZON = 120.0
DAY_MS = 86_400_000


async def topic_configs(bootstrap: str, topic: str) -> dict[str, str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    return {entry[0]: entry[1] for res in response.resources for entry in res[4]}


def test_alerts_topic_is_created_with_the_ledgers_retention_and_a_shorter_one_is_warned(
        bootstrap: str, caplog: pytest.LogCaptureFixture) -> None:
    topics = topic_set(unique("retention"))
    settings = topic_settings(bootstrap, topics, lead_wait_horizon_seconds=3600)
    created = asyncio.run(ensure_topics(settings))
    assert settings.alerts_topic in created
    assert asyncio.run(topic_configs(bootstrap, settings.alerts_topic))["retention.ms"] == str(DAY_MS + 3_600_000)

    # A topic that exists already, with the broker's default retention (7 days), shorter than
    # the default wait horizon (30 days) plus a day: the worker says so at start.
    existing = unique("alerts")
    asyncio.run(create_topics(bootstrap, [existing], partitions=1))
    caplog.set_level(logging.WARNING, logger="streams.app")
    asyncio.run(ensure_topics(topic_settings(bootstrap, topics, app_id=settings.app_id,
                                             alerts_topic=existing)))
    warnings = [r.getMessage() for r in caplog.records if existing in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert f"retention.ms={7 * DAY_MS} is shorter than {31 * DAY_MS}" in warnings[0]
    assert f"retention.ms={31 * DAY_MS}" in warnings[0]  # what to set


def test_a_lead_waiting_past_the_horizon_is_forgotten_and_never_paged_again(
        bootstrap: str, log_dir: Path) -> None:
    topics = topic_set(unique("horizon"))
    alerts_topic = topics["activities"].replace("activities", "alerts")  # created by the worker
    asyncio.run(create_topics(bootstrap, [*topics.values()]))
    created = time.time()
    asyncio.run(produce(bootstrap, [(topics["leads"], None, cloudevent(
        "lead.created", {"lead_id": "lead-idle", "rep_id": "rep-1", "team_id": "team-a"}, t=created), [])]))

    env = {"SALESPULSE_LEAD_SLA_SECONDS": str(SLA), "SALESPULSE_ALERTS_TOPIC": alerts_topic,
           "SALESPULSE_LEAD_WAIT_HORIZON_SECONDS": str(HORIZON)}
    worker = Worker(bootstrap, unique("app"), topics, log_dir, **env).start()
    try:
        worker.wait_for(
            lambda s: value(s, "salespulse_lead_alerts_sent_total") == 1
            and value(s, "salespulse_team_leads_awaiting_response", team="team-a") == 1,
            timeout=60, what="the alert of the untouched lead")
        configs = asyncio.run(topic_configs(bootstrap, alerts_topic))
        assert configs["retention.ms"] == str(DAY_MS + int(HORIZON * 1000))

        # Events from 32 reps (so in every partition) move the watermarks past the horizon:
        # event time, not the wall clock, ages leads out (future events are accepted up to 300 s).
        pushed = time.time() + HORIZON + 30
        assert pushed >= created + HORIZON
        asyncio.run(produce(bootstrap, [(topics["activities"], None, cloudevent(
            "tool.used", {"rep_id": f"pusher-{i}", "team_id": "team-b", "tool": "gong"}, t=pushed), [])
            for i in range(32)]))
        samples = worker.wait_for(
            lambda s: value(s, "salespulse_leads_expired_total") == 1,
            timeout=30, what="the lead forgotten past the wait horizon")
        assert value(samples, "salespulse_team_leads_awaiting_response", team="team-a") is None
        assert value(samples, "salespulse_team_leads_overdue", team="team-a") is None
        time.sleep(2)  # the rewritten lead part durable, its input committed

        worker.kill()
        worker.start()
        time.sleep(4 * 1.0 + 1)  # several judging ticks, the ledger read
        samples = worker.metrics()
        assert value(samples, "salespulse_lead_alerts_sent_total") == 0
        assert value(samples, "salespulse_team_leads_awaiting_response", team="team-a") is None

        alerts = [json.loads(r.value) for r in asyncio.run(read_topic(bootstrap, alerts_topic))]
        assert [a["data"]["lead_id"] for a in alerts] == ["lead-idle"]
    finally:
        worker.stop()

"""The topics a worker needs exist, and are in the broker's metadata, before its group joins.

Faust declares its internal topics (the keyed events, the state changelog) only as the worker
starts. A group that joined before the broker's metadata listed the keyed-events topic was
assigned none of its partitions ("Ignoring missing topic") and sat idle until the next metadata
refresh, five minutes later: seen in full test runs and in the benchmark's two-worker start.
``ensure_topics`` (run by ``salespulse worker`` before Faust starts) creates them with the
configs Faust would give them and returns once the metadata lists every topic it created.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.app import MAX_RECORD_BYTES, changelog_topic, ensure_topics, keyed_topic, rollup_topic
from tests.integration.harness import Worker, create_topics, topic_set, topic_settings, unique

pytestmark = pytest.mark.integration


async def _described(bootstrap: str, names: list[str]) -> dict[str, tuple[int, dict[str, str]]]:
    """{topic: (partitions, configs)} as the broker describes them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        partitions = {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics(names)}
        [response] = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in names])
    finally:
        await admin.close()
    configs = {res[3]: {entry[0]: entry[1] for entry in res[4]} for res in response.resources}
    return {name: (partitions[name], configs[name]) for name in names}


def test_the_internal_topics_are_created_and_listed_before_the_worker_starts(bootstrap: str) -> None:
    topics = topic_set(unique("internal"))
    settings = topic_settings(bootstrap, topics, partitions=4)
    created = asyncio.run(ensure_topics(settings))
    internal = [keyed_topic(settings), changelog_topic(settings), rollup_topic(settings)]
    assert set(internal) <= set(created)
    described = asyncio.run(_described(bootstrap, internal))
    for name in internal:
        partitions, configs = described[name]
        assert partitions == 4, name
        assert configs["max.message.bytes"] == str(MAX_RECORD_BYTES), name
    assert described[changelog_topic(settings)][1]["cleanup.policy"] == "compact"
    assert described[keyed_topic(settings)][1]["cleanup.policy"] == "delete"
    assert asyncio.run(ensure_topics(settings)) == []  # a second start creates nothing


def _poll_health(worker: Worker, statuses: list[int], until_assigned: bool, seconds: float) -> None:
    """GET /healthz every 5 ms (status codes into ``statuses``) until the worker owns partitions
    (``until_assigned``), or until it has exited, or ``seconds``."""
    deadline = time.monotonic() + seconds
    assert worker.proc is not None
    while time.monotonic() < deadline and worker.proc.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/healthz", timeout=5) as r:
                statuses.append(r.status)
                if until_assigned and json.loads(r.read())["assigned"]:
                    return
        except urllib.error.HTTPError as exc:
            statuses.append(exc.code)
        except OSError:
            pass  # not listening (yet, or any more)
        time.sleep(0.005)


def test_healthz_answers_while_the_worker_starts_and_while_it_stops(bootstrap: str, log_dir: Path) -> None:
    """/healthz is the liveness check, and answered 500 (``ConsumerNotStarted``) while the web
    server ran without the consumer: a supervisor polling it counted failures. Polled every
    5 ms from launch until the worker owns its partitions, and from SIGTERM until it has
    exited, it answers 200 every time it answers."""
    topics = topic_set(unique("health"))
    asyncio.run(create_topics(bootstrap, topics.values()))
    worker = Worker(bootstrap, unique("app-health"), topics, log_dir)
    worker.proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "worker"],
                                   cwd=log_dir, env=worker.env, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
    started: list[int] = []
    stopping: list[int] = []
    try:
        _poll_health(worker, started, until_assigned=True, seconds=90)
        assert started and started[-1] == 200
        worker.proc.send_signal(signal.SIGTERM)
        _poll_health(worker, stopping, until_assigned=False, seconds=30)
        assert worker.proc.wait(30) == 0
    finally:
        worker.kill()
    assert set(started) == {200}, sorted(set(started))
    assert set(stopping) <= {200}, sorted(set(stopping))

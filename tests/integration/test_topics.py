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

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from streams.app import MAX_RECORD_BYTES, changelog_topic, ensure_topics, keyed_topic, rollup_topic
from tests.integration.harness import topic_set, topic_settings, unique

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

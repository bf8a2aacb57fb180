"""A forward the broker refuses is never lost: the input it covers is not committed.

The ingest stage forwards validated events in bundles to ``<app_id>-keyed-events``. Here that
topic exists before the worker's first start with a tiny ``max.message.bytes`` (Faust does not
alter an existing topic), so the broker refuses every bundle above it: a real, non-retriable
produce error (MESSAGE_TOO_LARGE). The worker must not commit the input offsets those bundles
cover: it stops (non-zero exit) instead of carrying on or going idle with the loss committed.
Once the limit is raised, the restarted worker re-reads the input and every KPI equals the
oracle's single pass (producer duplicates included).
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from tests.integration.harness import (
    Worker,
    committed_offsets,
    create_topics,
    end_offsets,
    lag_zero,
    produce,
    topic_set,
    unique,
    value,
)
from tests.integration.oracle import (
    Oracle,
    activity_stream,
    assert_matches,
    recent_today,
    roster_record,
)

pytestmark = pytest.mark.integration

EVENTS = 12000
TINY_LIMIT = 20_000  # bytes: a bundle of more than ~60 events is refused


async def _create_keyed_topic(bootstrap: str, name: str, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1,
                                            topic_configs={"max.message.bytes": str(limit)})])
    finally:
        await admin.close()


async def _set_limit(bootstrap: str, name: str, limit: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name,
                                                  {"max.message.bytes": str(limit)})])
    finally:
        await admin.close()



def test_refused_forward_stops_the_worker_before_its_input_is_committed(
    bootstrap: str, log_dir: Path
) -> None:
    topics = topic_set(unique("fwd"))
    asyncio.run(create_topics(bootstrap, topics.values()))
    app_id = unique("app")
    keyed = f"{app_id}-keyed-events"
    asyncio.run(_create_keyed_topic(bootstrap, keyed, TINY_LIMIT))

    earliest, now = recent_today()
    rng = random.Random(11)
    oracle = Oracle()
    stream = activity_stream(rng, topics["activities"], EVENTS, oracle, earliest, now)
    stream.insert(0, roster_record(topics["reps"], earliest))

    worker = Worker(bootstrap, app_id, topics, log_dir).start()
    try:
        assert asyncio.run(produce(bootstrap, stream)) == len(stream)
        # The refused bundles must stop the worker, not leave it running (or idle) with the
        # input they came from committed.
        deadline = time.monotonic() + 45
        while worker.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        code = worker.proc.poll()
        log = worker.log_text()
        assert "MessageSizeTooLarge" in log or "MESSAGE_TOO_LARGE" in log.upper(), worker.log_tail()
        committed = asyncio.run(committed_offsets(bootstrap, app_id))
        ends = asyncio.run(end_offsets(bootstrap, [topics["activities"]]))
        behind = {tp: ends[tp] - committed.get(tp, 0) for tp in ends}
        assert code is not None and code != 0, (
            f"worker still running (or exited 0) after refused forwards; input left uncommitted "
            f"per partition: {behind}\n{worker.log_tail()}"
        )
        assert any(behind.values()), "every input offset was committed past refused forwards"

        asyncio.run(_set_limit(bootstrap, keyed, 8 * 1024 * 1024))
        worker.start()
        org_made = oracle.v[("org", "calls_made")]
        worker.wait_for(
            lambda s: lag_zero(s)
            and value(s, "salespulse_org_calls_made", window="day") == org_made,
            timeout=120, what="input drained after the limit was raised",
        )
        time.sleep(1.0)  # anything still in flight would now show as a surplus
        assert worker.until(lambda s: assert_matches(s, oracle)) > 100
    finally:
        worker.stop()

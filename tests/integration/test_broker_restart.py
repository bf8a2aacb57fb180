"""The broker restarts mid-stream: the worker rides it out and every KPI stays exact.

A worker consumes a paced live stream (with producer duplicates). Right after the first half
is produced, while the worker is still working through it, the Kafka broker is stopped
(SIGTERM, a clean broker shutdown), stays down for 30 s, and is started again; then the second
half is produced. The test's producer only produces before and after the outage. Afterwards the
same worker process is still running (it was not restarted) and every KPI equals the oracle's
single pass over the input.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from tests.integration.harness import (
    Worker,
    create_topics,
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

EVENTS = 8000
OUTAGE_SECONDS = 30.0



def test_worker_survives_a_broker_restart_mid_stream(
    bootstrap: str, log_dir: Path, broker_outage: tuple
) -> None:
    stop_broker, start_broker = broker_outage
    topics = topic_set(unique("restart"))
    asyncio.run(create_topics(bootstrap, topics.values()))
    earliest, now = recent_today()
    rng = random.Random(5)
    oracle = Oracle()
    stream = activity_stream(rng, topics["activities"], EVENTS, oracle, earliest, now)
    stream.insert(0, roster_record(topics["reps"], earliest))
    half = len(stream) // 2

    worker = Worker(bootstrap, unique("app"), topics, log_dir).start()
    try:
        assert asyncio.run(produce(bootstrap, stream[:half], pause_every=400, pause=0.2)) == half
        stop_broker()
        down_at = time.monotonic()
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - down_at)))
        assert worker.proc.poll() is None, f"worker died while the broker was down:\n{worker.log_tail()}"
        start_broker()
        assert asyncio.run(produce(bootstrap, stream[half:], pause_every=400, pause=0.2)) == len(stream) - half

        org_made = oracle.v[("org", "calls_made")]
        worker.wait_for(
            lambda s: lag_zero(s)
            and value(s, "salespulse_org_calls_made", window="day") == org_made,
            timeout=90, what="input drained after the broker restart",
        )
        time.sleep(1.0)  # anything still in flight would now show as a surplus
        assert worker.until(lambda s: assert_matches(s, oracle)) > 100
        assert worker.proc.poll() is None and worker.starts == 1
    finally:
        worker.stop()

"""Exactness across crashes: SIGKILL the worker mid-stream, restart, compare with one pass.

The worker is killed with SIGKILL (no flush, no commit, no leave-group) several times while
events, including producer duplicates, are still arriving. After the input is drained every KPI
must equal the oracle's single pass over the input: nothing lost, nothing applied twice. Then
it is killed once more and restarted: recovery from the changelog must give the same values.
"""

from __future__ import annotations

import asyncio
import random
import threading
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

EVENTS = 24000
KILLS = 3



def test_sigkill_mid_stream_keeps_every_kpi_exact(bootstrap: str, log_dir: Path) -> None:
    topics = topic_set(unique("crash"))
    asyncio.run(create_topics(bootstrap, topics.values()))
    earliest, now = recent_today()
    rng = random.Random(7)
    oracle = Oracle()
    roster = roster_record(topics["reps"], earliest)
    stream = activity_stream(rng, topics["activities"], EVENTS, oracle, earliest, now)
    stream.insert(len(stream) // 2, roster)  # the roster-only rep's team arrives mid-stream

    worker = Worker(bootstrap, unique("app"), topics, log_dir).start()
    try:
        done = threading.Event()
        sent = []

        def feed() -> None:
            sent.append(asyncio.run(produce(bootstrap, stream, pause_every=500, pause=0.25)))
            done.set()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(2.0, 4.0))
            worker.kill()
            worker.start()
        feeder.join(120)
        assert done.is_set() and sent == [len(stream)]

        org_made = oracle.v[("org", "calls_made")]
        worker.wait_for(
            lambda s: lag_zero(s)
            and value(s, "salespulse_org_calls_made", window="day") == org_made,
            timeout=180, what="input drained",
        )
        time.sleep(1.0)  # anything still in flight would now show as a surplus
        assert worker.until(lambda s: assert_matches(s, oracle)) > 100

        worker.kill()
        worker.start()
        worker.wait_for(
            lambda s: value(s, "salespulse_org_calls_made", window="day") is not None,
            timeout=60, what="state recovered",
        )
        time.sleep(1.0)
        assert worker.until(lambda s: assert_matches(s, oracle)) > 100
        assert worker.starts == KILLS + 2
    finally:
        worker.stop()

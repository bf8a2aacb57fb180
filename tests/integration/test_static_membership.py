"""Static group membership (``SALESPULSE_INSTANCE_ID``): a worker killed and restarted with the
same instance id takes its partitions back at once, exactly.

With dynamic membership the restarted process is a new member, and the group first waits out
the dead member's session (30 s by default) before anything is assigned: a SIGKILL (an OOM kill,
a node lost) kept the KPIs away for that long. Restarted under the same ``group.instance.id``,
the worker replaces its dead self in the group without a rebalance.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from tests.integration import harness as h
from tests.integration import oracle as o

pytestmark = pytest.mark.integration

SESSION = 30.0  # the default session timeout
EVENTS = 3000


def test_a_worker_restarted_with_its_instance_id_serves_at_once_and_exactly(bootstrap: str, log_dir: Path) -> None:
    topics = h.topic_set(h.unique("static"))
    asyncio.run(h.create_topics(bootstrap, topics.values()))
    earliest, now = o.recent_today()
    oracle = o.Oracle()
    stream = o.activity_stream(random.Random(11), topics["activities"], EVENTS, oracle, earliest, now)
    stream.insert(0, o.roster_record(topics["reps"], earliest))  # the roster-only rep's team
    app_id = h.unique("app")
    env = {"SALESPULSE_INSTANCE_ID": "worker-0", "SALESPULSE_SESSION_TIMEOUT_SECONDS": str(SESSION)}
    worker = h.Worker(bootstrap, app_id, topics, log_dir, **env).start()
    try:
        half = len(stream) // 2
        assert asyncio.run(h.produce(bootstrap, stream[:half])) == half
        time.sleep(1.0)
        worker.kill()  # no flush, no commit, no leave-group
        killed = time.monotonic()
        assert asyncio.run(h.produce(bootstrap, stream[half:])) == len(stream) - half
        # another process on another web port (Faust's assignment carries the worker's URL)
        worker = h.Worker(bootstrap, app_id, topics, log_dir, name="-again", **env)
        worker.start(timeout=SESSION)  # every partition assigned and restored
        back = time.monotonic() - killed
        assert back < SESSION / 3, f"ready {back:.1f} s after the kill"
        org_made = oracle.v[("org", "calls_made")]
        worker.wait_for(
            lambda s: h.lag_zero(s) and h.value(s, "salespulse_org_calls_made", window="day") == org_made,
            timeout=60, what="input drained",
        )
        time.sleep(1.0)
        assert worker.until(lambda s: o.assert_matches(s, oracle)) > 50
    finally:
        worker.stop()

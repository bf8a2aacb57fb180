"""A producer re-sending an event with a re-stamped ``time`` is counted once (SPEC section 2:
``source`` + ``id`` identify an event), across a SIGKILL and restart (issue 10, item 4).

The originals are stamped 80 to 200 s ago; the re-sends, produced after a SIGKILL and a restart
(the ids are then only in the recovered state), carry the time they are re-sent at: another
event-time minute, often another hour. The worker is SIGKILLed again while the re-sends arrive.
Every KPI must equal the oracle's count of the originals.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from pathlib import Path

import pytest

from tests.integration.harness import (
    Worker,
    create_topics,
    event_time,
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

EVENTS = 4000
RESENT = 800


def _restamped(record: tuple, t: float) -> tuple:
    topic, key, raw, headers = record
    event = json.loads(raw)
    event["time"] = event_time(t)
    return topic, key, json.dumps(event).encode(), headers


def _exact(oracle: Oracle):
    def check(s: dict) -> bool:
        return assert_matches(s, oracle) > 100
    return check


def test_a_restamped_resend_counts_once_across_a_restart(bootstrap: str, log_dir: Path) -> None:
    topics = topic_set(unique("restamp"))
    asyncio.run(create_topics(bootstrap, topics.values()))
    if time.time() % 86400 < 150:  # just after midnight: leave room for minutes apart, today
        time.sleep(150 - time.time() % 86400)
    earliest, now = recent_today()
    rng = random.Random(21)
    oracle = Oracle()
    stream = activity_stream(rng, topics["activities"], EVENTS, oracle, earliest,
                             max(earliest + 1, now - 80))
    stream.insert(0, roster_record(topics["reps"], earliest))
    org_made = oracle.v[("org", "calls_made")]

    worker = Worker(bootstrap, unique("app"), topics, log_dir).start()
    try:
        assert asyncio.run(produce(bootstrap, stream)) == len(stream)
        worker.wait_for(lambda s: lag_zero(s)
                        and value(s, "salespulse_org_calls_made", window="day") == org_made,
                        timeout=120, what="the originals counted")
        assert worker.until(_exact(oracle))

        worker.kill()
        worker.start()
        originals = {json.loads(r[2])["id"]: json.loads(r[2])["time"] for r in stream}
        resent = [_restamped(r, time.time()) for r in rng.sample(stream[1:], RESENT)]
        restamped = [json.loads(r[2]) for r in resent]
        assert all(e["time"][:16] != originals[e["id"]][:16] for e in restamped)  # other minutes
        sent: list[int] = []
        feeder = threading.Thread(
            target=lambda: sent.append(asyncio.run(produce(bootstrap, resent, pause_every=100, pause=0.3))),
            daemon=True,
        )
        feeder.start()
        time.sleep(1.0)
        worker.kill()  # while the re-sends arrive
        worker.start()
        feeder.join(60)
        assert sent == [RESENT]
        # Every owned partition read to its end (input and keyed events) by this process, then
        # time to apply: a re-send counted again now shows as a surplus (rep values are read
        # from the state itself; team and org values follow through the roll-up).
        worker.wait_for(lag_zero, timeout=120, what="the re-sends read")
        time.sleep(2.0)
        assert worker.until(_exact(oracle))
    finally:
        worker.stop()

"""Redis restarted mid-stream (issue 10 item 9, issue 12 item 3): the worker keeps processing
and exporting, says so once in its log, on ``salespulse_redis_up`` and /healthz, and when Redis
is back writes everything again: afterwards Redis holds exactly what /metrics shows, equal to
one pass over the events, and nothing stale of what the worker owns is left.

The Redis here is the test's own redis-server (stopped with SHUTDOWN SAVE for 30 s, so it
comes back with the data it had, old values included, like a planned restart); the broker is
the session's.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from pathlib import Path

import pytest

from metrics.windows import Calendar
from tests.integration.harness import (
    Worker,
    create_topics,
    eventually,
    produce,
    topic_set,
    unique,
    value,
)
from tests.integration.oracle import (
    TEAMS,
    Oracle,
    activity_stream,
    assert_matches,
    recent_today,
    roster_record,
)
from tests.integration.serving import RedisServer, kpi_series, redis_samples

pytestmark = pytest.mark.integration

OUTAGE_SECONDS = 30.0


def test_redis_restarted_mid_stream_ends_exact_with_nothing_stale(bootstrap: str, log_dir: Path) -> None:
    topics = topic_set(unique("rout"))
    asyncio.run(create_topics(bootstrap, topics.values()))
    server = RedisServer(log_dir / "redis").start()
    app_id = unique("app")
    worker = Worker(bootstrap, app_id, topics, log_dir, SALESPULSE_REDIS_URL=server.url,
                    SALESPULSE_REDIS_TIMEOUT_SECONDS="1")
    client = server.client()
    try:
        worker.start()
        earliest, now = recent_today()
        rng = random.Random(91)
        oracle = Oracle()
        first = activity_stream(rng, topics["activities"], 1500, oracle, earliest, now)
        asyncio.run(produce(bootstrap, [roster_record(topics["reps"], earliest), *first]))
        worker.until(lambda s: assert_matches(s, oracle))
        eventually(lambda: assert_matches(redis_samples(client, app_id), oracle), 30)

        # Stale entries of scopes the worker owns (it owns every partition): a rep it never
        # saw, on a leaderboard too, and a day window of a real rep that is not live.
        day = Calendar("UTC").bounds("day", time.time())[0]
        ghost = f"{app_id}:kpis:day:{int(day)}:rep:ghost-rep"
        old = f"{app_id}:kpis:day:{int(day) - 3 * 86400}:rep:rep-1"
        board = f"{app_id}:lb:day:{int(day)}:calls_made"
        client.hset(ghost, mapping={"scope": "rep", "id": "ghost-rep", "kpis": "{}"})
        client.hset(old, mapping={"scope": "rep", "id": "rep-1", "kpis": "{}"})
        client.zadd(board, {"ghost-rep": 999.0})

        # The start's full writes are done: at start, and once the roll-up stage has read the
        # partitions it was given (which can come after the first events are in Redis).
        def synced() -> None:
            assert worker.health()["redis"]["synced"], worker.health()["redis"]

        eventually(synced, 30)
        resyncs = worker.health()["redis"]["resyncs"]
        server.stop()
        stopped = time.monotonic()
        second = activity_stream(rng, topics["activities"], 1500, oracle, earliest, time.time())
        feeder = threading.Thread(
            target=lambda: asyncio.run(produce(bootstrap, second, pause_every=150, pause=0.5)))
        feeder.start()
        # Down: the worker notices, says so, and keeps processing and exporting.
        samples = worker.wait_for(lambda s: value(s, "salespulse_redis_up") == 0.0, 20,
                                  "salespulse_redis_up 0")
        down = worker.health()["redis"]
        assert down["up"] is False and down["synced"] is False, down
        feeder.join(60)
        worker.until(lambda s: assert_matches(s, oracle), 60)
        assert time.monotonic() - stopped < OUTAGE_SECONDS, "the stream took longer than the outage"
        time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))

        server.start()  # with the values of before the outage, and the stale entries
        worker.wait_for(lambda s: value(s, "salespulse_redis_up") == 1.0, 30, "salespulse_redis_up 1")
        health = worker.health()["redis"]
        assert health["up"] is True and health["resyncs"] == resyncs + 1, health

        # Afterwards Redis holds exactly what /metrics shows, which is one pass over the events.
        def same() -> None:
            shown = kpi_series(worker.metrics())
            held = redis_samples(client, app_id)
            assert held == {k: v for k, v in shown.items() if k in held}
            assert set(shown) - set(held) == set(), sorted(set(shown) - set(held))[:5]

        eventually(same, 30)
        assert worker.health()["redis"]["synced"] is True
        assert_matches(redis_samples(client, app_id), oracle)
        assert not client.exists(ghost) and not client.exists(old)
        made = {rep.encode(): oracle.v.get(("rep", rep, team, "calls_made"), 0.0)
                for rep, team in TEAMS.items()}

        def ranked() -> None:  # boards follow values within the board interval (5 s)
            assert dict(client.zrevrange(board, 0, -1, withscores=True)) == {
                rep: v for rep, v in made.items() if v}

        eventually(ranked, 15)
        # One warning for the whole outage, not one per write or retry.
        log = worker.log_text()
        assert log.count("unavailable (") == 1, log
        assert value(samples, "salespulse_redis_errors_total") >= 1
    finally:
        worker.stop()
        server.kill()

"""No state part exceeds what the changelog accepts, whatever the input (issue 10, item 2).

The state changelog (``<app_id>-kpi-state-changelog``) exists here before the worker's first
start with a small ``max.message.bytes`` (Faust does not alter an existing topic), and the
worker's part bound (``SALESPULSE_STATE_PART_BYTES``, a product setting) is set below it: the
same situation as the 8 MiB default limit and 1 MiB bound, at a size a test can feed. Each test
feeds one input that makes a single part far larger than the topic accepts — a bulk import
stamped in one minute (remembered ids), a window of very many keys, very many waiting leads, a
huge roster (``meta``) — with one input partition read by one keyed-events partition so that it
all lands in one partition's parts. A worker that wrote such a part whole would have it refused
by the broker, stop, and rebuild the same part after every restart. The worker is SIGKILLed
mid-stream and once more at the end; every value must equal the oracle's, and the changelog
must hold chunked parts (keys ``<part>~<generation>~<index>``).
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from tests.integration.harness import (
    Worker,
    cloudevent,
    create_topics,
    lag_zero,
    produce,
    read_topic,
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

TOPIC_LIMIT = 16 * 1024  # the changelog's max.message.bytes
PART_BYTES = 8 * 1024  # the worker's bound, below it
ENV = {"SALESPULSE_STATE_PART_BYTES": str(PART_BYTES), "SALESPULSE_PARTITIONS": "1"}


async def _create_changelog(bootstrap: str, app_id: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(
            f"{app_id}-kpi-state-changelog", num_partitions=1, replication_factor=1,
            topic_configs={"cleanup.policy": "compact", "max.message.bytes": str(TOPIC_LIMIT)},
        )])
    finally:
        await admin.close()


def _setup(bootstrap: str, prefix: str) -> tuple[dict[str, str], str]:
    topics = topic_set(unique(prefix))
    asyncio.run(create_topics(bootstrap, topics.values(), partitions=1))
    app_id = unique("app")
    asyncio.run(_create_changelog(bootstrap, app_id))
    return topics, app_id


def _quiet(check: Any) -> Any:
    """``check`` as a predicate: False while its assertions fail."""
    def predicate(s: dict) -> bool:
        try:
            return bool(check(s))
        except AssertionError:
            return False
    return predicate


def _exercise(bootstrap: str, topics: dict[str, str], app_id: str, log_dir: Path, stream: list,
              check: Any, what: str, chunked: str, first: list | None = None) -> None:
    """Start a worker (after it has read ``first``, if given); feed ``stream`` while SIGKILLing
    it once mid-stream; wait until ``check`` passes on /metrics; SIGKILL and restart once more
    and check again. The changelog must then hold chunks of a part named ``chunked...``."""
    worker = Worker(bootstrap, app_id, topics, log_dir, **ENV).start()
    try:
        if first:
            assert asyncio.run(produce(bootstrap, first)) == len(first)
            worker.wait_for(lambda s: lag_zero(s) and (value(s, "salespulse_events_processed_total",
                                                             type="rep.updated") or 0) >= len(first),
                            timeout=120, what="the first records read")
        sent: list[int] = []
        feeder = threading.Thread(
            target=lambda: sent.append(asyncio.run(produce(bootstrap, stream, pause_every=2000, pause=0.3))),
            daemon=True,
        )
        feeder.start()
        time.sleep(2.5)
        worker.kill()
        worker.start()
        feeder.join(120)
        assert sent == [len(stream)]
        worker.wait_for(lambda s: lag_zero(s) and _quiet(check)(s), timeout=180, what=what)
        time.sleep(1.0)  # anything still in flight would now show as a surplus
        assert worker.until(check)
        worker.kill()
        worker.start()
        worker.wait_for(_quiet(check), timeout=90, what=f"{what}, after a restart")
        assert worker.until(check)
        assert "MessageSizeTooLarge" not in worker.log_text()
        assert any(k.startswith(chunked) for k in _chunked_keys(bootstrap, app_id))
    finally:
        worker.stop()


def _chunked_keys(bootstrap: str, app_id: str) -> set[str]:
    records = asyncio.run(read_topic(bootstrap, f"{app_id}-kpi-state-changelog"))
    return {json.loads(r.key).split("/", 1)[1].rsplit("~", 2)[0]
            for r in records if r.value is not None and b"~" in r.key}


def test_a_bulk_import_stamped_in_one_minute(bootstrap: str, log_dir: Path) -> None:
    """3,300 events (300 of them producer duplicates) in one event-time minute: that minute's
    remembered ids are ~70 KB, four times what the changelog accepts."""
    topics, app_id = _setup(bootstrap, "bulk")
    now = time.time()
    minute = now - now % 60 - 60
    if minute - minute % 86400 != now - now % 86400:
        minute = now - now % 60  # just after midnight: stay in today's day window
    rng = random.Random(5)
    oracle = Oracle()
    stream = activity_stream(rng, topics["activities"], 3000, oracle, minute, minute + 59)
    stream.insert(0, roster_record(topics["reps"], minute))
    _exercise(bootstrap, topics, app_id, log_dir, stream, lambda s: assert_matches(s, oracle) > 50,
              "the bulk import counted", "d/")


def test_a_window_holding_very_many_keys(bootstrap: str, log_dir: Path) -> None:
    """1,500 reps with a call each: every window holds ~3,000 keys, ~100 KB."""
    topics, app_id = _setup(bootstrap, "keys")
    earliest, now = recent_today()
    rng = random.Random(6)
    reps = {f"rep-{i:05d}": f"team-{i % 7}" for i in range(1500)}
    calls: Counter[str] = Counter()
    stream = []
    for rep, team in reps.items():
        for _ in range(rng.choice([1, 1, 2])):
            calls[rep] += 1
            data = {"rep_id": rep, "team_id": team, "direction": "outbound", "outcome": "busy"}
            stream.append((topics["activities"], None, cloudevent(
                "call.completed", data, t=rng.uniform(earliest + 1, now)), []))
    stream += rng.sample(stream, 200)  # producer duplicates
    rng.shuffle(stream)
    teams: Counter[str] = Counter()
    for rep, n in calls.items():
        teams[reps[rep]] += n

    def check(s: dict) -> bool:
        assert value(s, "salespulse_org_calls_made", window="day") == calls.total()
        for team, n in teams.items():
            assert value(s, "salespulse_team_calls_made", team=team, window="day") == n
        for rep, n in calls.items():
            assert value(s, "salespulse_rep_calls_made", rep=rep, team=reps[rep], window="day") == n
        return True

    _exercise(bootstrap, topics, app_id, log_dir, stream, check, "every rep's calls counted", "w/")


def test_very_many_waiting_leads(bootstrap: str, log_dir: Path) -> None:
    """12,000 leads created and never answered: each of the 32 lead parts holds ~375 waiting
    leads, ~25 KB."""
    topics, app_id = _setup(bootstrap, "leads")
    earliest, now = recent_today()
    rng = random.Random(7)
    teams: Counter[str] = Counter()
    stream = []
    for i in range(12000):
        team = f"team-{i % 5}"
        teams[team] += 1
        data = {"lead_id": f"lead-{i:06d}-{rng.getrandbits(32):08x}", "rep_id": f"rep-{i % 40}",
                "team_id": team, "source": "web"}
        stream.append((topics["leads"], None, cloudevent(
            "lead.created", data, t=rng.uniform(earliest + 1, now)), []))
    stream += rng.sample(stream, 500)  # producer duplicates
    rng.shuffle(stream)

    def check(s: dict) -> bool:
        for team, n in teams.items():
            assert value(s, "salespulse_team_leads_awaiting_response", team=team) == n, team
        return True

    _exercise(bootstrap, topics, app_id, log_dir, stream, check, "every lead awaiting its response", "l/")


def test_a_huge_roster(bootstrap: str, log_dir: Path) -> None:
    """1,500 ``rep.updated`` with targets: ``meta`` (the roster) is ~90 KB. Each rep then has a
    call that names no team: its team comes from the roster, restored after every kill."""
    topics, app_id = _setup(bootstrap, "roster")
    earliest, now = recent_today()
    rng = random.Random(8)
    reps = {f"rep-{i:05d}": f"team-{i % 9}" for i in range(1500)}
    stream = [
        (topics["reps"], None, cloudevent("rep.updated", {
            "rep_id": rep, "team_id": team, "region": "emea",
            "targets": {"calls_made": {"day": 40.0, "week": 200.0}},
        }, t=earliest + 1), [])
        for rep, team in reps.items()
    ]
    calls = []
    for rep in reps:
        data = {"rep_id": rep, "direction": "outbound", "outcome": "busy"}
        calls.append((topics["activities"], None, cloudevent(
            "call.completed", data, t=rng.uniform(earliest + 2, now)), []))
    rng.shuffle(calls)
    teams = Counter(reps.values())

    def check(s: dict) -> bool:
        assert value(s, "salespulse_org_calls_made", window="day") == len(reps)
        assert value(s, "salespulse_team_calls_made", team="unassigned", window="day") is None
        for team, n in teams.items():
            assert value(s, "salespulse_team_calls_made", team=team, window="day") == n, team
        return True

    # the roster first (its own input topic, read at its own pace), then the calls
    _exercise(bootstrap, topics, app_id, log_dir, calls, check, "every call in its rep's roster team",
              "meta", first=stream)

"""Many workers, one truth: a group of real worker processes exports every series exactly once.

Three workers of one app id share a live stream with producer duplicates while the group
changes under it: two join mid-stream, one is SIGKILLed and restarted, two leave with SIGTERM.
After each step, across both workers' /metrics, every rep, team and organisation series of the
day window is exported by exactly one worker and equals one pass over the distinct events —
ratios included, which no sum over workers could give; Redis, written by each worker for the
scopes it owns, holds the same values. Then the sales.metrics topic, read with
an independent client (Debian's kcat), holds only records valid against the published JSON
Schema, its latest record per key carries the same values, and the windows of a live minute end
with a final record holding every call of that minute.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from redis import Redis

from tests.integration.harness import (
    REDIS_URL,
    REPO,
    Samples,
    Worker,
    cloudevent,
    create_topics,
    eventually,
    produce,
    topic_set,
    unique,
    value,
)
from tests.integration.oracle import TEAMS, Oracle, activity_stream, assert_matches, recent_today
from tests.integration.serving import kpi_series, redis_samples

pytestmark = pytest.mark.integration

EVENTS = 12000
GRACE = 2.0  # seconds: the live minute's windows close (and go final) soon
KPI_FAMILIES = ("salespulse_rep_", "salespulse_team_", "salespulse_org_")


def merged(workers: list[Worker]) -> Samples:
    """Every worker's KPI series in one map; a series exported by two workers fails."""
    out: Samples = {}
    owner: dict = {}
    for w in workers:
        for key, v in w.metrics().items():
            if not key[0].startswith(KPI_FAMILIES):
                continue
            assert key not in out, f"{key} exported by workers {owner[key]} and {w.port}"
            out[key] = v
            owner[key] = w.port
    return out


def check_group(workers: list[Worker], oracle: Oracle, timeout: float = 90.0) -> int:
    return eventually(lambda: assert_matches(merged(workers), oracle), timeout, every=0.5)


def test_a_group_exports_every_series_once_and_exactly(bootstrap: str, log_dir: Path) -> None:
    topics = topic_set(unique("group"))
    asyncio.run(create_topics(bootstrap, [t for k, t in topics.items() if k != "metrics"]))
    earliest, now = recent_today()
    rng = random.Random(23)
    oracle = Oracle()
    stream = activity_stream(rng, topics["activities"], EVENTS, oracle, earliest, now)
    responses = _leads(rng, topics, stream, oracle, earliest, now)
    roster = [(topics["reps"], None, cloudevent("rep.updated", {"rep_id": rep, "team_id": team},
                                                t=earliest), []) for rep, team in TEAMS.items()]
    app_id = unique("app")
    env = {"SALESPULSE_GRACE_SECONDS": str(GRACE)}
    a, b, c = (Worker(bootstrap, app_id, topics, log_dir, name=n, **env) for n in ("-a", "-b", "-c"))
    a.start()
    try:
        asyncio.run(produce(bootstrap, roster))
        done = threading.Event()

        def feed() -> None:
            asyncio.run(produce(bootstrap, stream, pause_every=600, pause=0.3))
            done.set()

        feeder = threading.Thread(target=feed, daemon=True)
        feeder.start()
        time.sleep(2.0)
        b.start(at_least=1)  # joins mid-stream
        time.sleep(2.0)
        c.start(at_least=1)  # a third one
        time.sleep(2.0)
        b.kill()  # SIGKILL mid-stream; its partitions move after the session timeout
        time.sleep(1.0)
        b.start(at_least=1)
        feeder.join(180)
        assert done.is_set()
        group = [a, b, c]
        assert check_group(group, oracle) > 100
        _check_redis(group, app_id, oracle)
        _check_responses(group, responses)  # quantiles from sketches merged across workers
        owned = [w.health()["assigned"] for w in group]
        assert sorted(p for ps in owned for p in ps) == [0, 1, 2, 3], owned

        finals = _live_minute(topics, bootstrap, oracle, after=now)

        c.stop()  # SIGTERM: leaves the group
        b.stop()
        for w in (b, c):
            assert w.proc is not None and w.proc.returncode == 0
        a.wait_ready(60)
        assert check_group([a], oracle) > 100
        _check_redis([a], app_id, oracle)

        _check_metrics_topic(topics["metrics"], bootstrap, oracle, finals)
    finally:
        for w in (c, b, a):
            w.stop()


def _check_redis(workers: list[Worker], app_id: str, oracle: Oracle) -> None:
    """Redis, written by each worker for what it owns, holds what the group shows on /metrics
    (steady windows), and that is one pass over the events."""
    client = Redis.from_url(REDIS_URL)

    def same() -> None:
        held = redis_samples(client, app_id)
        assert held == kpi_series(merged(workers))
        assert_matches(held, oracle)

    eventually(same, 60, every=0.5)


def _leads(rng: random.Random, topics: dict[str, str], stream: list, oracle: Oracle,
           earliest: float, now: float) -> dict[tuple[str, str], list[float]]:
    """Leads and their first touches (meetings by a rep of the lead's team), shuffled into
    ``stream``; returns the response seconds per (rep, team) of the touch."""
    responses: dict[tuple[str, str], list[float]] = {}
    reps = sorted(TEAMS)
    for i in range(80):
        rep = reps[i % len(reps)]
        team = TEAMS[rep]
        created = round(rng.uniform(earliest + 1, now - 60), 3)
        touched = round(created + rng.uniform(3, 55), 3)
        lead = {"lead_id": f"lead-{i}", "rep_id": rep, "team_id": team}
        stream.append((topics["leads"], None, cloudevent("lead.created", lead, t=created), []))
        stream.append((topics["activities"], None, cloudevent("meeting.scheduled", lead, t=touched), []))
        oracle.add("meeting.scheduled", lead)
        responses.setdefault((rep, team), []).append(touched - created)
    rng.shuffle(stream)  # touches before their lead.created, across workers
    return responses


def _check_responses(group: list[Worker], responses: dict[tuple[str, str], list[float]]) -> None:
    def rank(values: list[float], q: float) -> float:  # DDSketch's rank convention
        return sorted(values)[int(q * (len(values) - 1))]

    def check(samples: Samples) -> None:
        per_team: dict[str, list[float]] = {}
        for (rep, team), secs in responses.items():
            per_team.setdefault(team, []).extend(secs)
            got = value(samples, "salespulse_rep_lead_response_seconds_avg", rep=rep, team=team, window="day")
            assert got == pytest.approx(sum(secs) / len(secs), rel=1e-6), (rep, got)
        every = [x for secs in per_team.values() for x in secs]
        for labels, secs in [*(({"team": t}, v) for t, v in per_team.items()), ({}, every)]:
            scope = "team" if labels else "org"
            for q in (0.5, 0.9):
                got = value(samples, f"salespulse_{scope}_lead_response_seconds_p{int(q * 100)}",
                            **labels, window="day")
                assert got == pytest.approx(rank(secs, q), rel=0.02), (labels, q, got)
            got = value(samples, f"salespulse_{scope}_lead_response_seconds_avg", **labels, window="day")
            assert got == pytest.approx(sum(secs) / len(secs), rel=1e-6), (labels, got)

    eventually(lambda: check(merged(group)), 60, every=0.5)


def _live_minute(topics: dict[str, str], bootstrap: str, oracle: Oracle, after: float) -> dict[str, float]:
    """Calls stamped now, all in one minute that begins after ``after`` (the stream's newest
    event); returns the expected final calls_made of that minute per scope key, once its
    windows have closed past their grace and been dropped."""
    if time.time() // 60 * 60 < after or time.time() % 60 > 45:
        time.sleep(60.5 - time.time() % 60)
    minute = time.time() // 60 * 60
    calls = []
    expected: dict[str, float] = {}
    for i in range(40):
        rep = f"rep-{i % 5}"
        data = {"rep_id": rep, "team_id": TEAMS[rep], "direction": "outbound", "outcome": "busy",
                "talk_seconds": 0, "wrap_seconds": 0}
        oracle.add("call.completed", data)  # the day's values include them too
        calls.append((topics["activities"], None, cloudevent(
            "call.completed", data, t=min(time.time(), minute + 59)), []))
        for key in (f"rep/{rep}", f"team/{TEAMS[rep]}", "org/org"):
            expected[key] = expected.get(key, 0.0) + 1
    asyncio.run(produce(bootstrap, calls))
    # dropped two grace periods after its end, then published within a flush and an interval
    time.sleep(max(0.0, minute + 60 + 2 * GRACE + 4 - time.time()))
    stamp = datetime.fromtimestamp(minute, UTC).isoformat().replace("+00:00", "Z")
    return {f"{k}/minute/{stamp}": v for k, v in expected.items()}


def _check_metrics_topic(topic: str, bootstrap: str, oracle: Oracle, finals: dict[str, float]) -> None:
    out = subprocess.run(
        ["kcat", "-b", bootstrap, "-C", "-t", topic, "-e", "-q", "-J"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout
    envelopes = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert envelopes, "no record in sales.metrics"
    schema = json.loads((REPO / "docs" / "schema" / "sales-metrics.v1.json").read_text())
    validator = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
    latest: dict[str, dict] = {}
    for env in sorted(envelopes, key=lambda e: (e["partition"], e["offset"])):
        record = json.loads(env["payload"])
        errors = [e.message for e in validator.iter_errors(record)]
        assert not errors, (env["key"], errors)
        scope, scope_id, window, start = env["key"].split("/", 3)
        assert (record["scope"], record["id"], record["window"], record["window_start"]) == (
            scope, scope_id, window, start)
        latest[env["key"]] = record
    day = {(r["scope"], r["id"]): r for r in latest.values() if r["window"] == "day"}
    checked = 0
    for key, expected in oracle.v.items():
        if key[-1].startswith("_") or key[-2:-1] == ("tool_uses",) or key[-1] == "tool_uses":
            continue
        scope = key[0]
        ident = key[1] if scope != "org" else "org"
        record = day[(scope, ident)]
        if scope == "rep":
            assert record["team"] == key[2]
        assert record["kpis"].get(key[-1], 0.0) == pytest.approx(expected), (key, record["kpis"])
        checked += 1
    org = day[("org", "org")]["kpis"]
    assert org["call_connect_ratio"] == pytest.approx(
        oracle.v[("org", "calls_connected")] / oracle.v[("org", "calls_made")])
    assert checked > 50
    # The live minute's windows closed: their last record is final and carries every call.
    for key, calls in finals.items():
        record = latest[key]
        assert record["final"] is True, (key, record)
        assert record["kpis"].get("calls_made") == calls, (key, record)

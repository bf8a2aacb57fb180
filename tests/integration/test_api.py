"""The HTTP API on a real worker with real Kafka and Redis: values equal one pass over the
events (the oracle), leaderboards rank them, overdue leads are listed, bad requests get JSON
4xx, every answer is one docs/openapi.json describes, and the stream pushes an update."""

from __future__ import annotations

import asyncio
import json
import queue
import random
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from redis import Redis
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

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
)
from tests.integration.oracle import (
    TEAMS,
    Oracle,
    activity_stream,
    assert_matches,
    recent_today,
    roster_record,
)

pytestmark = pytest.mark.integration

DOC = json.loads((REPO / "docs" / "openapi.json").read_text())
REGISTRY = Registry().with_resource("urn:openapi", Resource.from_contents(DOC, default_specification=DRAFT202012))


def documented(template: str, status: int, body: Any) -> None:
    """``body`` is what docs/openapi.json says ``GET template`` answers with ``status``."""
    response = DOC["paths"][template]["get"]["responses"][str(status)]
    if "$ref" in response:
        response = DOC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema = response["content"]["application/json"]["schema"]
    pointer = schema["$ref"].split("#", 1)[1]
    Draft202012Validator({"$ref": f"urn:openapi#{pointer}"}, registry=REGISTRY).validate(body)


def get(worker: Worker, path: str, template: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}{path}", timeout=10) as r:
            status, body = r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        status, body = err.code, json.loads(err.read())
    documented(template, status, body)
    return status, body


def api_samples(worker: Worker) -> Samples:
    """The day values of every rep, team and the org from the API, as /metrics samples."""
    out: Samples = {}
    targets = [("rep", f"/api/v1/reps/{r}", "/api/v1/reps/{rep_id}", {"rep": r, "team": t})
               for r, t in TEAMS.items()]
    targets += [("team", f"/api/v1/teams/{t}", "/api/v1/teams/{team_id}", {"team": t})
                for t in set(TEAMS.values())]
    targets += [("org", "/api/v1/org", "/api/v1/org", {})]
    for scope, path, template, labels in targets:
        status, body = get(worker, path, template)
        assert status == 200, body
        assert body["window"] == "day" and body["window_start"].endswith("T00:00:00Z")
        if scope == "rep":
            assert body["team"] == labels["team"]
        for kpi, v in body["kpis"].items():
            if isinstance(v, dict):
                for dim, x in v.items():
                    out[(f"salespulse_{scope}_{kpi}", frozenset({**labels, "window": "day", "tool": dim}.items()))] = x
            else:
                out[(f"salespulse_{scope}_{kpi}", frozenset({**labels, "window": "day"}.items()))] = v
    return out


def _gone(redis: Redis, key: str) -> bool:
    assert not redis.exists(key), f"{key} still in Redis"
    return True


def test_the_api_answers_exactly_from_redis(bootstrap: str, log_dir: Path) -> None:
    topics = topic_set(unique("api"))
    asyncio.run(create_topics(bootstrap, topics.values()))
    app_id = unique("app")
    # Left from an earlier life of the app id: a rep the worker owns but has no values for.
    redis = Redis.from_url(REDIS_URL)
    day = int(time.time() // 86400 * 86400)
    ghost = f"{app_id}:kpis:day:{day}:rep:ghost-rep"
    redis.hset(ghost, mapping={"scope": "rep", "id": "ghost-rep", "kpis": "{}"})
    worker = Worker(bootstrap, app_id, topics, log_dir).start()
    try:
        earliest, now = recent_today(400)
        rng = random.Random(5)
        oracle = Oracle()
        stream = activity_stream(rng, topics["activities"], 1200, oracle, earliest, now)
        overdue = {"lead_id": "lead-late", "rep_id": "rep-1", "team_id": TEAMS["rep-1"]}
        answered = {"lead_id": "lead-ok", "rep_id": "rep-2", "team_id": TEAMS["rep-2"]}
        created = now - 390
        leads = [(topics["leads"], None, cloudevent("lead.created", lead, t=created), [])
                 for lead in (overdue, answered)]
        touch = cloudevent("meeting.scheduled", answered, t=created + 20)
        oracle.add("meeting.scheduled", answered)
        asyncio.run(produce(bootstrap, [roster_record(topics["reps"], earliest), *stream, *leads,
                                        (topics["activities"], None, touch, [])]))
        worker.until(lambda s: assert_matches(s, oracle))
        assert eventually(lambda: assert_matches(api_samples(worker), oracle), 30) > 100
        # Once its roll-up partitions are read, the worker deletes what it owns and lacks.
        assert eventually(lambda: _gone(redis, ghost), 10)

        # leaderboards: every rep with calls, highest first, ties sharing a rank; they follow the
        # values within SALESPULSE_REDIS_BOARD_INTERVAL_SECONDS (5 s), with the latest values
        made = {r: oracle.v.get(("rep", r, t, "calls_made"), 0.0) for r, t in TEAMS.items()}
        template = "/api/v1/leaderboards/{kpi}"

        def ranked() -> dict:
            status, board = get(worker, "/api/v1/leaderboards/calls_made?limit=100", template)
            assert status == 200
            assert {e["rep"]: e["value"] for e in board["entries"]} == {r: v for r, v in made.items() if v}
            return board

        board = eventually(ranked, 15)
        assert all(e["team"] == TEAMS[e["rep"]] for e in board["entries"])
        values = [e["value"] for e in board["entries"]]
        assert values == sorted(values, reverse=True)
        for e in board["entries"]:
            assert e["rank"] == 1 + sum(1 for v in values if v > e["value"])
        _, top = get(worker, "/api/v1/leaderboards/calls_made?team=team-a&limit=2", template)
        team_a = sorted((v for r, v in made.items() if TEAMS[r] == "team-a" and v), reverse=True)
        assert [e["value"] for e in top["entries"]] == team_a[:2] and top["team"] == "team-a"
        assert all(e["team"] == "team-a" for e in top["entries"])

        # overdue leads: the untouched one, with its wait, per team
        def late() -> dict:
            status, body = get(worker, "/api/v1/leads/overdue", "/api/v1/leads/overdue")
            assert status == 200 and [d["lead_id"] for d in body["leads"]] == ["lead-late"], body
            return body

        body = eventually(late, 30)
        lead = body["leads"][0]
        assert lead["team_id"] == TEAMS["rep-1"] and lead["rep_id"] == "rep-1"
        assert lead["waited_seconds"] >= time.time() - created - 5 > body["sla_seconds"]
        _, other = get(worker, "/api/v1/leads/overdue?team=no-such-team", "/api/v1/leads/overdue")
        assert other["leads"] == [] and other["team"] == "no-such-team"

        # bad requests: a JSON message saying what was wrong
        for path, template, status, words in [
            ("/api/v1/leaderboards/no_such_kpi", "/api/v1/leaderboards/{kpi}", 404, "unknown KPI"),
            ("/api/v1/leaderboards/tool_uses", "/api/v1/leaderboards/{kpi}", 400, "no rep leaderboard"),
            ("/api/v1/leaderboards/calls_made?limit=1000", "/api/v1/leaderboards/{kpi}", 400, "limit"),
            ("/api/v1/leaderboards/calls_made?limit=x", "/api/v1/leaderboards/{kpi}", 400, "limit"),
            ("/api/v1/leaderboards/calls_made?team=nobody", "/api/v1/leaderboards/{kpi}", 404, "team"),
            ("/api/v1/org?window=year", "/api/v1/org", 400, "unknown window"),
            ("/api/v1/org?colour=red", "/api/v1/org", 400, "unknown parameter"),
            ("/api/v1/reps/nobody", "/api/v1/reps/{rep_id}", 404, "rep 'nobody'"),
            ("/api/v1/teams/" + "x" * 129, "/api/v1/teams/{team_id}", 400, "128"),
            ("/api/v1/stream?scope=galaxy", "/api/v1/stream", 400, "unknown scope"),
            ("/api/v1/stream?scope=org&id=x", "/api/v1/stream", 400, "id needs"),
        ]:
            got, body = get(worker, path, template)
            assert got == status and words in body["error"], (path, got, body)
        request = urllib.request.Request(f"http://127.0.0.1:{worker.port}/api/v1/org", method="POST")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(request, timeout=5)
        assert err.value.code == 405 and "read-only" in json.loads(err.value.read())["error"]

        # the stream: a snapshot of the team, then an update carrying the new call
        events: queue.Queue = queue.Queue()
        url = f"http://127.0.0.1:{worker.port}/api/v1/stream?scope=team&id=team-a&window=day"

        def listen() -> None:
            with urllib.request.urlopen(url, timeout=30) as r:
                assert r.headers["Content-Type"].startswith("text/event-stream")
                kind = None
                for raw in r:
                    line = raw.decode().rstrip("\n")
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: "):
                        events.put((kind, json.loads(line[6:])))
                        if kind == "update":
                            return

        threading.Thread(target=listen, daemon=True).start()
        kind, snap = events.get(timeout=10)
        assert kind == "snapshot" and snap["id"] == "team-a"
        before = snap["kpis"]["calls_made"]
        assert before == oracle.v[("team", "team-a", "calls_made")]
        call = {"rep_id": "rep-1", "team_id": "team-a", "direction": "outbound", "outcome": "busy"}
        asyncio.run(produce(bootstrap, [(topics["activities"], None,
                                         cloudevent("call.completed", call, t=time.time()), [])]))
        kind, update = events.get(timeout=15)
        assert kind == "update" and update["scope"] == "team" and update["id"] == "team-a"
        assert update["kpis"]["calls_made"] == before + 1
        documented("/api/v1/reps/{rep_id}", 200, update)  # update data is a Scope object

        # A stream left open does not keep the worker from stopping (SIGTERM, within 10 s).
        opened = threading.Event()

        def hold() -> None:
            with urllib.request.urlopen(url, timeout=60) as r:
                r.readline()
                opened.set()
                r.read()

        threading.Thread(target=hold, daemon=True).start()
        assert opened.wait(10)
        took, code = worker.terminate(timeout=30)
        assert code == 0 and took < 10, (took, code)
    finally:
        worker.stop()

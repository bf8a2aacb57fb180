"""Bounded label cardinality on a real broker: a worker with small caps (via the environment)
serves at most cap + 1 series per family and label, counts the rest under ``other`` and in
``salespulse_label_overflow_total{label}``, keeps organisation totals exact, and after a SIGKILL
and restart decides as before (the admitted values are part of the durable state).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict
from pathlib import Path

import pytest

from metrics.windows import Calendar
from tests.integration.harness import (
    Samples,
    Worker,
    cloudevent,
    create_topics,
    produce,
    topic_set,
    unique,
    value,
)

pytestmark = pytest.mark.integration

REPS, TEAMS, TOOLS = 30, 8, 12
CAP_REPS, CAP_TEAMS, CAP_TOOLS = 5, 3, 4
ROUNDS = 4  # every rep sends ROUNDS calls and ROUNDS tool uses; teams and tools evenly spread


def _batch(topic: str, earliest: float, now: float, rng: random.Random) -> list[tuple]:
    records = []
    for i in range(REPS * ROUNDS):
        rep, team, tool = f"rep-{i % REPS}", f"team-{i % TEAMS}", f"tool-{i % TOOLS}"
        for etype, data in (
            ("call.completed", {"rep_id": rep, "team_id": team, "direction": "outbound", "outcome": "busy"}),
            ("tool.used", {"rep_id": rep, "team_id": team, "tool": tool}),
        ):
            records.append((topic, None, cloudevent(etype, data, t=rng.uniform(earliest, now)), []))
    rng.shuffle(records)
    return records


def _label_values(samples: Samples) -> dict[tuple[str, str], set[str]]:
    """(family, label) -> distinct values, over the windowed KPI families."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for (name, labels), _ in samples.items():
        if name.startswith(("salespulse_rep_", "salespulse_team_", "salespulse_org_")):
            for label, v in labels:
                if label != "window":
                    out[(name, label)].add(v)
    return out


def _check(samples: Samples, batches: int) -> dict[str, set[str]]:
    caps = {"rep": CAP_REPS, "team": CAP_TEAMS, "tool": CAP_TOOLS}
    for (family, label), values in _label_values(samples).items():
        assert len(values) <= caps.get(label, CAP_TOOLS) + 1, (family, label, sorted(values))
    events = REPS * ROUNDS * batches
    assert value(samples, "salespulse_org_calls_made", window="day") == events
    org_tools = {dict(labels)["tool"]: v for (name, labels), v in samples.items()
                 if name == "salespulse_org_tool_uses" and dict(labels)["window"] == "day"}
    assert sum(org_tools.values()) == events
    assert org_tools["other"] == (TOOLS - CAP_TOOLS) * (events // TOOLS)
    by_rep: dict[str, float] = defaultdict(float)  # the rep "other" has a series per team
    for (name, labels), v in samples.items():
        if name == "salespulse_rep_calls_made" and dict(labels)["window"] == "day":
            by_rep[dict(labels)["rep"]] += v
    assert len(by_rep) == CAP_REPS + 1
    assert by_rep["other"] == (REPS - CAP_REPS) * ROUNDS * batches
    assert all(v == ROUNDS * batches for rep, v in by_rep.items() if rep != "other")
    teams = {dict(labels)["team"]: v for (name, labels), v in samples.items()
             if name == "salespulse_team_calls_made" and dict(labels)["window"] == "day"}
    assert len(teams) == CAP_TEAMS + 1 and sum(teams.values()) == events
    assert teams["other"] == (TEAMS - CAP_TEAMS) * (events // TEAMS)
    return {"rep": set(by_rep), "team": set(teams), "tool": set(org_tools)}


def test_label_caps_bound_series_and_keep_totals_exact_across_a_crash(bootstrap: str, log_dir: Path) -> None:
    prefix = unique("caps")
    topics = topic_set(prefix)
    asyncio.run(create_topics(bootstrap, topics.values()))
    env = {
        "SALESPULSE_PARTITIONS": "1",  # caps are per aggregate partition: one, so cap + 1 overall
        "SALESPULSE_MAX_REPS": str(CAP_REPS),
        "SALESPULSE_MAX_TEAMS": str(CAP_TEAMS),
        "SALESPULSE_MAX_DIMENSION_VALUES": str(CAP_TOOLS),
    }
    worker = Worker(bootstrap, unique("app"), topics, log_dir, **env).start()
    try:
        now = time.time()
        day_start, _ = Calendar("UTC").bounds("day", now)
        earliest = max(day_start + 1, now - 240)
        rng = random.Random(5)
        first = _batch(topics["activities"], earliest, now, rng)
        asyncio.run(produce(bootstrap, first))
        events = REPS * ROUNDS
        worker.wait_for(
            lambda s: value(s, "salespulse_events_processed_total", type="call.completed") == events
            and value(s, "salespulse_events_processed_total", type="tool.used") == events,
            what="all events applied",
        )
        admitted = worker.until(lambda s: _check(s, 1))
        samples = worker.metrics()
        # counted per event and label: the refused values' events
        assert value(samples, "salespulse_label_overflow_total", label="rep") == (REPS - CAP_REPS) * ROUNDS * 2
        assert value(samples, "salespulse_label_overflow_total", label="team") == (TEAMS - CAP_TEAMS) * events * 2 // TEAMS
        assert value(samples, "salespulse_label_overflow_total", label="tool") == (TOOLS - CAP_TOOLS) * events // TOOLS
        log = worker.log_text()
        for label in ("rep", "team", "tool"):
            assert log.count(f"label {label!r}: a partition holds its cap") == 1, label

        # A crash, a restart from the changelog, the same input again: the same values are
        # admitted (a replay or a restart decides as the first pass did), totals stay exact.
        worker.kill()
        worker.start()
        now = time.time()
        earliest = max(day_start + 1, now - 240)
        asyncio.run(produce(bootstrap, _batch(topics["activities"], earliest, now, rng)))
        worker.wait_for(
            lambda s: value(s, "salespulse_events_processed_total", type="tool.used") is not None
            and value(s, "salespulse_org_calls_made", window="day") == 2 * events,
            what="the second batch applied",
        )
        again = worker.until(lambda s: _check(s, 2))
        assert again == admitted
    finally:
        worker.stop()

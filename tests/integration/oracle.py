"""An independent oracle for the activity KPIs: counts straight from the produced events.

Written from SPEC section 1, a few lines per KPI, sharing no code with the service.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict

import pytest

from tests.integration.harness import Samples, cloudevent, value

TEAMS = {f"rep-{i}": ("team-a" if i % 2 else "team-b") for i in range(8)}
ROSTER_ONLY_REP = "rep-7"  # its events carry no team_id: the team comes from rep.updated


def make_activity(rng: random.Random, t: float) -> tuple[str, dict]:
    rep = rng.choice(sorted(TEAMS))
    base: dict = {"rep_id": rep}
    if rep != ROSTER_ONLY_REP:
        base["team_id"] = TEAMS[rep]
    if rng.random() < 0.25:
        base["customer_id"] = f"cust-{rng.randint(1, 5)}"
    kind = rng.choice(["call", "call", "call", "email", "conversation", "meeting", "crm", "tool"])
    if kind == "call":
        connected = rng.random() < 0.4
        return "call.completed", {
            **base,
            "direction": rng.choice(["outbound", "outbound", "inbound"]),
            "outcome": "connected" if connected else rng.choice(["no_answer", "voicemail", "busy"]),
            "talk_seconds": rng.randint(20, 600) if connected else 0,
            "wrap_seconds": rng.randint(0, 90) if connected else 0,
        }
    if kind == "email":
        return "email.sent", {**base, "automated": rng.random() < 0.4}
    if kind == "conversation":
        return "conversation.held", {**base, "channel": "video", "duration_seconds": 300}
    if kind == "meeting":
        return "meeting.scheduled", base
    if kind == "crm":
        base.pop("customer_id", None)
        return "crm.record_updated", {**base, "object": "contact", "action": "updated"}
    base.pop("customer_id", None)
    return "tool.used", {**base, "tool": rng.choice(["gong", "linkedin"])}


class Oracle:
    """Day-window KPI values computed straight from the events, per rep, team and org."""

    def __init__(self) -> None:
        self.v: dict[tuple, float] = defaultdict(float)

    def add(self, etype: str, d: dict) -> None:
        rep = d["rep_id"]
        for scope in (("rep", rep, TEAMS[rep]), ("team", TEAMS[rep]), ("org",)):
            def inc(kpi: str, amount: float = 1.0, *dims: str, _s: tuple = scope) -> None:
                self.v[(*_s, kpi, *dims)] += amount

            if etype == "call.completed":
                out = d["direction"] == "outbound"
                conn = d["outcome"] == "connected"
                inc("talk_seconds", d["talk_seconds"])
                if out:
                    inc("calls_made")
                    if conn:
                        inc("calls_connected")
                else:
                    inc("calls_received")
                if conn:
                    inc("_handled")
                    inc("_handle_s", d["talk_seconds"] + d["wrap_seconds"])
            elif etype == "email.sent":
                inc("emails_automated" if d["automated"] else "emails_sent")
            elif etype == "conversation.held":
                inc("conversations")
            elif etype == "meeting.scheduled":
                inc("meetings_scheduled")
            elif etype == "crm.record_updated":
                inc("crm_updates")
            elif etype == "tool.used":
                inc("tool_uses", 1.0, d["tool"])
            if etype in ("call.completed", "email.sent", "meeting.scheduled", "conversation.held") \
                    and d.get("customer_id"):
                inc("customer_engagements")


def _labels(scope: tuple) -> dict[str, str]:
    if scope[0] == "rep":
        return {"rep": scope[1], "team": scope[2]}
    if scope[0] == "team":
        return {"team": scope[1]}
    return {}




STORED = ("calls_made", "calls_connected", "calls_received", "talk_seconds", "emails_sent",
          "emails_automated", "conversations", "meetings_scheduled", "crm_updates",
          "customer_engagements")


def assert_matches(samples: Samples, oracle: Oracle, kinds: tuple[str, ...] = ("rep", "team", "org")) -> int:
    """Assert every day-window KPI of every rep, team and the org (or only the scope ``kinds``
    named) equals the oracle's."""
    stored = STORED
    scopes = {("rep", r, TEAMS[r]) for r in TEAMS} | {("team", t) for t in set(TEAMS.values())} | {("org",)}
    scopes = {scope for scope in scopes if scope[0] in kinds}
    checked = 0
    for scope in scopes:
        labels = _labels(scope)
        family = f"salespulse_{scope[0]}_"
        for kpi in stored:
            expected = oracle.v.get((*scope, kpi), 0.0)
            got = value(samples, family + kpi, **labels, window="day")
            if expected == 0 and got is None:
                continue
            assert got == pytest.approx(expected), (scope, kpi, got, expected)
            checked += 1
        for tool in ("gong", "linkedin"):
            expected = oracle.v.get((*scope, "tool_uses", tool), 0.0)
            got = value(samples, family + "tool_uses", **labels, window="day", tool=tool)
            assert (got or 0.0) == pytest.approx(expected), (scope, tool)
        made = oracle.v.get((*scope, "calls_made"), 0.0)
        if made:
            ratio = value(samples, family + "call_connect_ratio", **labels, window="day")
            assert ratio == pytest.approx(oracle.v.get((*scope, "calls_connected"), 0.0) / made)
        handled = oracle.v.get((*scope, "_handled"), 0.0)
        if handled:
            aht = value(samples, family + "average_handle_seconds", **labels, window="day")
            assert aht == pytest.approx(oracle.v[(*scope, "_handle_s")] / handled)
    return checked


def activity_stream(rng: random.Random, topic: str, n: int, oracle: Oracle, earliest: float,
                    now: float) -> list:
    """``n`` activities stamped between ``earliest`` and ``now``, counted by ``oracle``, plus 10%
    producer duplicates (the same bytes again), in random order: records for ``produce``."""
    records = []
    for _ in range(n):
        etype, data = make_activity(rng, 0)
        oracle.add(etype, data)
        records.append((topic, None, cloudevent(etype, data, t=rng.uniform(earliest + 1, now)), []))
    stream = records + rng.sample(records, n // 10)  # producer duplicates
    rng.shuffle(stream)
    return stream


def recent_today(seconds: float = 200.0) -> tuple[float, float]:
    """(earliest, now): the last ``seconds``, cut at today's start (UTC), so that every event
    stamped in between lies in today's day window."""
    now = time.time()
    day_start = now - now % 86400
    return max(day_start + 1, now - seconds), now


def roster_record(topic: str, t: float) -> tuple:
    """The ``rep.updated`` that gives :data:`ROSTER_ONLY_REP` (whose events name no team) its
    team, as a record for ``produce``."""
    return (topic, None, cloudevent(
        "rep.updated", {"rep_id": ROSTER_ONLY_REP, "team_id": TEAMS[ROSTER_ONLY_REP]}, t=t), [])

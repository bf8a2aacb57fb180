"""The demo sales floor emits valid SPEC section 2 events in a realistic, deterministic mix.

The contract checks below are written against the SPEC table directly (not against the
generator's own constants), so a drift in either shows up here.
"""

from __future__ import annotations

import itertools
import json
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from streams.demo.mix import DemoRecord, SalesFloor

START = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
N = 150_000

# SPEC section 2: type -> required data fields
REQUIRED: dict[str, set[str]] = {
    "call.completed": {"rep_id", "direction", "outcome"},
    "email.sent": {"rep_id"},
    "meeting.scheduled": {"rep_id"},
    "conversation.held": {"rep_id"},
    "crm.record_updated": {"rep_id", "object", "action"},
    "tool.used": {"rep_id", "tool"},
    "lead.created": {"lead_id"},
    "lead.assigned": {"lead_id", "rep_id"},
    "lead.qualified": {"lead_id", "stage"},
    "lead.converted": {"lead_id"},
    "lead.lost": {"lead_id", "reason"},
    "opportunity.created": {"opportunity_id", "rep_id"},
    "opportunity.stage_changed": {"opportunity_id", "to_stage"},
    "opportunity.won": {"opportunity_id", "rep_id", "amount"},
    "opportunity.lost": {"opportunity_id", "rep_id"},
    "nps.responded": {"score"},
    "enps.responded": {"score", "team_id"},
    "spend.recorded": {"amount", "category"},
    "rep.updated": {"rep_id"},
}
# SPEC section 2: enumerated values
ENUMS: dict[tuple[str, str], set[str]] = {
    ("call.completed", "direction"): {"outbound", "inbound"},
    ("call.completed", "outcome"): {"connected", "no_answer", "voicemail", "busy", "failed"},
    ("crm.record_updated", "object"): {"lead", "contact", "account", "opportunity", "note", "task"},
    ("crm.record_updated", "action"): {"created", "updated"},
    ("lead.qualified", "stage"): {"mql", "sql"},
    ("lead.lost", "reason"): {"competitor", "no_decision", "unqualified", "unresponsive", "other"},
    ("opportunity.won", "deal_type"): {"new", "upsell", "cross_sell", "renewal"},
    ("spend.recorded", "category"): {"sales", "marketing"},
}
NON_NEGATIVE = {"talk_seconds", "wrap_seconds", "duration_seconds", "amount"}
ID_FIELDS = {"rep_id", "team_id", "lead_id", "customer_id", "opportunity_id"}
TOPICS = {
    "sales.activities": {
        "call.completed",
        "email.sent",
        "meeting.scheduled",
        "conversation.held",
        "crm.record_updated",
        "tool.used",
    },
    "sales.leads": {
        "lead.created",
        "lead.assigned",
        "lead.qualified",
        "lead.converted",
        "lead.lost",
    },
    "sales.deals": {
        "opportunity.created",
        "opportunity.stage_changed",
        "opportunity.won",
        "opportunity.lost",
        "spend.recorded",
    },
    "sales.feedback": {"nps.responded", "enps.responded"},
    "sales.reps": {"rep.updated"},
}
HUMAN_TOUCH = {"call.completed", "email.sent", "meeting.scheduled", "conversation.held"}


def parse_time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def records() -> list[DemoRecord]:
    return list(SalesFloor(seed=7, start=START).events(N))


@pytest.fixture(scope="module")
def decoded(records: list[DemoRecord]) -> list[dict]:
    return [json.loads(r.value.decode("utf-8")) for r in records]


def test_same_seed_gives_same_bytes_and_other_seed_differs() -> None:
    a = list(SalesFloor(seed=11, start=START).events(20_000))
    b = list(SalesFloor(seed=11, start=START).events(20_000))
    c = list(SalesFloor(seed=12, start=START).events(20_000))
    assert a == b
    assert a != c
    assert len(a) == 20_000


def test_every_value_is_a_spec_cloudevent(decoded: list[dict]) -> None:
    assert len(decoded) == N
    for e in decoded:
        assert e["specversion"] == "1.0"
        assert isinstance(e["id"], str) and e["id"]
        assert isinstance(e["source"], str) and e["source"]
        assert e["type"] in REQUIRED, e["type"]
        assert e["time"].endswith("Z") and len(e["time"]) == len("2026-01-05T09:00:00.000Z")
        assert parse_time(e["time"]).tzinfo is not None
        data = e["data"]
        missing = REQUIRED[e["type"]] - data.keys()
        assert not missing, (e["type"], missing)
        for (etype, field), allowed in ENUMS.items():
            if e["type"] == etype and field in data:
                assert data[field] in allowed, (etype, field, data[field])
        for field in NON_NEGATIVE & data.keys():
            assert isinstance(data[field], int | float) and data[field] >= 0, (field, data)
        for field in ID_FIELDS & data.keys():
            assert isinstance(data[field], str) and 1 <= len(data[field]) <= 128
        if e["type"] in ("nps.responded", "enps.responded"):
            assert isinstance(data["score"], int) and 0 <= data["score"] <= 10
        if e["type"] == "email.sent":
            assert isinstance(data["automated"], bool)
        if "currency" in data:
            assert data["currency"] == "USD"


def test_all_spec_types_occur(decoded: list[dict]) -> None:
    assert {e["type"] for e in decoded} == set(REQUIRED)


def test_ids_are_unique(decoded: list[dict]) -> None:
    assert len({(e["id"], e["source"]) for e in decoded}) == len(decoded)


def test_topic_routing_and_keys(records: list[DemoRecord], decoded: list[dict]) -> None:
    topic_of = {t: topic for topic, types in TOPICS.items() for t in types}
    for r, e in zip(records, decoded, strict=True):
        assert r.topic == topic_of[e["type"]], (r.topic, e["type"])
        d = e["data"]
        expected = d.get("rep_id") or d.get("lead_id") or d.get("team_id") or d["category"]
        assert r.key == expected.encode()


def test_average_size(records: list[DemoRecord]) -> None:
    sizes = [len(r.value) for r in records]
    assert 200 <= statistics.fmean(sizes) <= 400
    assert max(sizes) < 1024


def test_roster_first_one_per_rep_round_robin(decoded: list[dict]) -> None:
    roster = decoded[:1000]
    assert all(e["type"] == "rep.updated" for e in roster)
    assert [e["data"]["rep_id"] for e in roster] == [f"rep-{i:04d}" for i in range(1, 1001)]
    assert [e["data"]["team_id"] for e in roster[:41]] == (
        [f"team-{t:02d}" for t in range(1, 41)] + ["team-01"]
    )
    assert {e["data"]["region"] for e in roster} == {"amer", "emea", "apac"}
    assert all(e["data"]["targets"]["calls_made"]["day"] > 0 for e in roster)
    assert sum(e["type"] == "rep.updated" for e in decoded) == 1000


def test_bulk_times_non_decreasing_and_not_in_future() -> None:
    before = datetime.now(UTC)
    evs = [json.loads(r.value) for r in SalesFloor(seed=3).events(30_000)]
    after = datetime.now(UTC)
    times = [parse_time(e["time"]) for e in evs]
    assert all(a <= b for a, b in itertools.pairwise(times))
    assert times[-1] <= after
    # spans real event time, ending shortly before now
    assert times[-1] - times[0] >= timedelta(minutes=1)
    assert before - times[-1] < timedelta(seconds=30)


def test_bulk_times_with_fixed_start_fit_before_clock() -> None:
    clock_now = START + timedelta(minutes=2)
    floor = SalesFloor(seed=3, start=START)
    evs = [json.loads(r.value) for r in floor.events(20_000, clock=clock_now.timestamp)]
    times = [parse_time(e["time"]) for e in evs]
    assert times[0] == START
    assert times[-1] <= clock_now
    assert all(a <= b for a, b in itertools.pairwise(times))


def test_live_mode_stamps_the_clock() -> None:
    ticks = itertools.count()
    base = START.timestamp()

    def clock() -> float:
        return base + next(ticks) * 0.25

    evs = [json.loads(r.value) for r in SalesFloor(seed=5).events(2_000, rate=100, clock=clock)]
    times = [parse_time(e["time"]) for e in evs]
    assert times[0] >= START
    assert times[-1] > START + timedelta(minutes=5)
    assert all(a <= b for a, b in itertools.pairwise(times))


def test_floor_continues_across_calls() -> None:
    floor = SalesFloor(seed=9, start=START)
    first = [json.loads(r.value) for r in floor.events(3_000)]
    second = [json.loads(r.value) for r in floor.events(3_000)]
    assert {e["id"] for e in first}.isdisjoint({e["id"] for e in second})
    assert parse_time(first[-1]["time"]) <= parse_time(second[0]["time"])
    assert not any(e["type"] == "rep.updated" for e in second)


def test_unfixed_start_gives_fresh_ids_per_floor() -> None:
    a = json.loads(next(iter(SalesFloor(seed=1).events(1))).value)["id"]
    time.sleep(0.001)
    b = json.loads(next(iter(SalesFloor(seed=1).events(1))).value)["id"]
    assert a != b


def test_lead_touches_reference_created_leads_from_their_owner(decoded: list[dict]) -> None:
    created: dict[str, datetime] = {}
    owner: dict[str, str] = {}
    closed: set[str] = set()
    first_touch: dict[str, datetime] = {}
    touches = 0
    for e in decoded:
        d, etype, t = e["data"], e["type"], parse_time(e["time"])
        lead = d.get("lead_id")
        if etype == "lead.created":
            assert lead not in created
            created[lead] = t
            if "rep_id" in d:
                owner[lead] = d["rep_id"]
            continue
        if lead is None:
            continue
        assert lead in created, f"{etype} references unknown lead {lead}"
        assert created[lead] <= t
        if etype == "lead.assigned":
            owner[lead] = d["rep_id"]
        elif etype in HUMAN_TOUCH:
            touches += 1
            assert lead not in closed, f"{etype} touches closed lead {lead}"
            assert d["rep_id"] == owner[lead]
            human = not d.get("automated", False) and (
                etype != "call.completed" or d["direction"] == "outbound"
            )
            if human:
                first_touch.setdefault(lead, t)
        elif etype in ("lead.converted", "lead.lost"):
            assert lead not in closed
            closed.add(lead)
    assert len(created) > 1000
    assert touches > 5 * len(created)
    # speed to lead: median about a minute, a tail beyond the 300 s SLA
    delays = [(first_touch[lead] - created[lead]).total_seconds() for lead in first_touch]
    assert 20 <= statistics.median(delays) <= 180
    late = sum(x > 300 for x in delays) / len(delays)
    assert 0.01 <= late <= 0.15


def test_opportunity_lifecycle_is_consistent(decoded: list[dict]) -> None:
    stage: dict[str, str] = {}
    done: set[str] = set()
    won = []
    for e in decoded:
        etype, d = e["type"], e["data"]
        if not etype.startswith("opportunity."):
            continue
        opp = d["opportunity_id"]
        assert opp not in done
        if etype == "opportunity.created":
            assert opp not in stage
            stage[opp] = "qualification"
        elif etype == "opportunity.stage_changed":
            assert d["from_stage"] == stage[opp]
            stage[opp] = d["to_stage"]
        else:
            assert opp in stage
            done.add(opp)
            if etype == "opportunity.won":
                won.append(d["amount"])
    assert len(won) > 50
    assert 10_000 <= statistics.median(won) <= 35_000


def test_activity_mix_looks_like_a_sales_floor(decoded: list[dict]) -> None:
    activity = decoded[1000:]  # after the roster
    n = len(activity)
    kinds = Counter(e["type"] for e in activity)
    outbound = [
        e["data"]
        for e in activity
        if e["type"] == "call.completed" and e["data"]["direction"] == "outbound"
    ]
    inbound = kinds["call.completed"] - len(outbound)
    emails = [e["data"] for e in activity if e["type"] == "email.sent"]
    assert 0.35 <= len(outbound) / n <= 0.45
    assert 0.03 <= inbound / n <= 0.07
    assert 0.20 <= len(emails) / n <= 0.30
    assert 0.30 <= sum(d["automated"] for d in emails) / len(emails) <= 0.50
    connected = [d for d in outbound if d["outcome"] == "connected"]
    assert 0.25 <= len(connected) / len(outbound) <= 0.35
    assert all(30 <= d["talk_seconds"] <= 900 for d in connected)
    assert all(d["talk_seconds"] == 0 for d in outbound if d["outcome"] != "connected")
    assert all(0 <= d["wrap_seconds"] <= 120 for d in outbound)
    assert {d["outcome"] for d in outbound} == {
        "connected",
        "no_answer",
        "voicemail",
        "busy",
        "failed",
    }
    with_customer = sum("customer_id" in e["data"] for e in activity if e["type"] in HUMAN_TOUCH)
    assert with_customer / n > 0.05
    assert {e["data"]["tool"] for e in activity if e["type"] == "tool.used"} >= {
        "linkedin",
        "gong",
        "outreach",
    }
    for etype in (
        "conversation.held",
        "meeting.scheduled",
        "crm.record_updated",
        "tool.used",
        "lead.created",
        "nps.responded",
        "spend.recorded",
    ):
        assert kinds[etype] > 0, etype


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError):
        SalesFloor(reps=0)

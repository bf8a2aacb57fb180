"""The fast path: activity KPI sums per window (expected values are counted from the events
with the SPEC section 1 definitions), and lateness.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from metrics.events import (
    CallCompleted,
    ConversationHeld,
    CrmRecordUpdated,
    EmailSent,
    MeetingScheduled,
    RepUpdated,
    ToolUsed,
)
from metrics.windows import KIND_INDEX
from tests.unit.metrics.state.support import (
    DAY,
    HOUR,
    MINUTE,
    ROSTER_REP,
    T0,
    Feed,
    apply_all,
    ev,
    in_bundles,
    new_state,
    of,
    random_activity,
    roster_team,
    spec_activity,
    window,
)

# -- activity KPIs -----------------------------------------------------------------------------


def test_activity_kpis_per_rep_and_team_match_the_spec_definitions():
    rng = random.Random(1)
    feed = Feed()
    items = [(T0 + rng.uniform(0, 3 * 3600), random_activity(rng)) for _ in range(4000)]
    items.sort(key=lambda x: x[0])
    events = feed.events(items)
    roster = Feed("sales.reps", 0).bundle([
        ev(0, T0, RepUpdated(ROSTER_REP, team_id="team-c"), source="hr")
    ])
    state = new_state()
    state.apply(roster, 0)
    apply_all(state, in_bundles(feed, events, rng), 1)

    expected = spec_activity(events, roster_team)
    assert window(state, DAY, T0) == expected
    assert window(state, KIND_INDEX["week"], T0) == expected
    assert window(state, KIND_INDEX["quarter"], T0) == expected
    # the hours add up to the day, and each hour holds exactly its own events
    hours: Counter = Counter()
    for h in range(3):
        got = window(state, HOUR, T0 + h * 3600)
        assert got == spec_activity(
            [e for e in events if T0 + h * 3600 <= e.time < T0 + (h + 1) * 3600], roster_team
        )
        hours.update(got)
    assert dict(hours) == pytest.approx(expected)
    # every event counted in the minutes, too
    minutes: Counter = Counter()
    for m in range(180):
        minutes.update(window(state, MINUTE, T0 + m * 60))
    assert dict(minutes) == pytest.approx(expected)
    processed, duplicates, late = state.drain_counters()
    assert processed == Counter(e.type for e in events) + Counter({"rep.updated": 1})
    assert (duplicates, late) == (0, 0)


def _one_window(datas, t=T0 + 5) -> dict[tuple, float]:
    feed = Feed()
    state = new_state()
    state.apply(feed.bundle(feed.events((t, d) for d in datas)), 0)
    return window(state, DAY, t)


def test_calls_made_counts_outbound_calls_of_any_outcome():
    outcomes = ["connected", "no_answer", "voicemail", "busy", "failed"]
    calls = [CallCompleted("r", "outbound", o, team_id="t") for o in outcomes]
    calls += [CallCompleted("r", "inbound", "connected", team_id="t"),
              CallCompleted("r", "inbound", "no_answer", team_id="t")]
    values = _one_window(calls)
    assert of(values, "calls_made") == {("r", "t"): 5}
    assert of(values, "calls_connected") == {("r", "t"): 1}
    assert of(values, "calls_received") == {("r", "t"): 2}
    assert of(values, "calls_received_connected") == {("r", "t"): 1}


def test_voicemail_is_not_a_connection():
    values = _one_window([CallCompleted("r", "outbound", "voicemail", team_id="t",
                                        talk_seconds=30.0, wrap_seconds=10.0)] * 3)
    assert of(values, "calls_made") == {("r", "t"): 3}
    assert of(values, "calls_connected") == {}
    assert of(values, "handled_calls") == {}
    assert of(values, "talk_seconds") == {("r", "t"): 90}  # talk time counts over all calls


def test_automated_emails_are_counted_apart():
    emails = [EmailSent("r", team_id="t")] * 4 + [EmailSent("r", team_id="t", automated=True)] * 7
    values = _one_window(emails)
    assert of(values, "emails_sent") == {("r", "t"): 4}
    assert of(values, "emails_automated") == {("r", "t"): 7}


def test_customer_engagements_only_count_activities_with_a_customer():
    with_customer = [
        CallCompleted("r", "inbound", "busy", team_id="t", customer_id="c"),
        EmailSent("r", team_id="t", customer_id="c", automated=True),
        MeetingScheduled("r", team_id="t", customer_id="c"),
        ConversationHeld("r", team_id="t", customer_id="c"),
    ]
    without = [
        CallCompleted("r", "outbound", "connected", team_id="t", lead_id="l"),
        EmailSent("r", team_id="t", lead_id="l"),
        MeetingScheduled("r", team_id="t"),
        ConversationHeld("r", team_id="t"),
        CrmRecordUpdated("r", "account", "created", team_id="t"),
        ToolUsed("r", "gong", team_id="t"),
    ]
    assert of(_one_window(with_customer + without), "customer_engagements") == {("r", "t"): 4}
    assert of(_one_window(without), "customer_engagements") == {}


def test_tool_uses_per_tool_and_crm_updates():
    tools = ["gong"] * 3 + ["linkedin"] * 2 + ["outreach"]
    datas = [ToolUsed("r", tool, team_id="t") for tool in tools]
    datas += [CrmRecordUpdated("r", o, a, team_id="t") for o in ("lead", "note") for a in ("created", "updated")]
    values = _one_window(datas)
    assert of(values, "tool_uses") == {("r", "t", "gong"): 3, ("r", "t", "linkedin"): 2,
                                       ("r", "t", "outreach"): 1}
    assert of(values, "crm_updates") == {("r", "t"): 4}


def test_talk_time_and_average_handle_time_inputs():
    calls = [
        CallCompleted("r", "outbound", "connected", team_id="t", talk_seconds=100.0, wrap_seconds=20.0),
        CallCompleted("r", "inbound", "connected", team_id="t", talk_seconds=50.0, wrap_seconds=5.0),
        CallCompleted("r", "outbound", "no_answer", team_id="t", talk_seconds=7.0, wrap_seconds=3.0),
        CallCompleted("r", "inbound", "voicemail", team_id="t", talk_seconds=11.0),
    ]
    values = _one_window(calls)
    assert of(values, "talk_seconds") == {("r", "t"): 100 + 50 + 7 + 11}
    assert of(values, "handled_calls") == {("r", "t"): 2}  # connected, both directions
    assert of(values, "handle_seconds") == {("r", "t"): 100 + 20 + 50 + 5}
    assert of(values, "conversations") == {}


# -- lateness ------------------------------------------------------------------------------------


def test_out_of_order_within_grace_equals_in_order():
    for seed in range(20):
        rng = random.Random(seed)
        # 40 minutes across an hour boundary
        items = [(T0 + 1800 + rng.uniform(0, 2400), random_activity(rng)) for _ in range(600)]
        in_order = sorted(items, key=lambda x: x[0])
        # arrival order: event time plus up to 200 s of delay, well within the 300 s grace
        shuffled = sorted(items, key=lambda x: x[0] + rng.uniform(0, 200))
        assert shuffled != in_order
        results = []
        for order in (in_order, shuffled):
            feed = Feed()
            state = new_state(grace_seconds=300)
            apply_all(state, in_bundles(feed, feed.events(order), rng))
            assert state.drain_counters()[2] == 0
            results.append({
                (k, s): dict(p.values) for (k, s), p in state.windows.items()
            })
        assert results[0] == results[1]
        assert len(results[0]) >= 6 + 40  # every kind, every minute


def test_late_events_skip_closed_windows_but_count_in_open_ones():
    feed = Feed()
    call = CallCompleted("r", "outbound", "busy", team_id="t")
    state = new_state(grace_seconds=60)
    state.apply(feed.bundle(feed.events([(T0 + 10, call), (T0 + 200, call)])), 0)
    # T0's minute closed at T0+60; its grace ended at T0+120 <= watermark T0+200
    late = feed.events([(T0 + 20, call)])
    state.apply(feed.bundle(late), 1)
    assert of(window(state, MINUTE, T0), "calls_made") == {("r", "t"): 1}
    assert of(window(state, MINUTE, T0 + 200), "calls_made") == {("r", "t"): 1}
    assert of(window(state, HOUR, T0), "calls_made") == {("r", "t"): 3}
    assert of(window(state, DAY, T0), "calls_made") == {("r", "t"): 3}
    processed, _, late_count = state.drain_counters()
    assert late_count == 1 and processed["call.completed"] == 3
    # a late event inside the same bundle as the one that moved the watermark
    state.apply(feed.bundle(feed.events([(T0 + 400, call), (T0 + 250, call), (T0 + 330, call)])), 2)
    # T0+250's minute [T0+240, T0+300) is beyond its grace at watermark T0+400: late
    assert of(window(state, MINUTE, T0 + 250), "calls_made") == {}
    assert of(window(state, MINUTE, T0 + 330), "calls_made") == {("r", "t"): 1}  # within grace
    assert of(window(state, HOUR, T0), "calls_made") == {("r", "t"): 6}
    assert state.drain_counters()[2] == 1


def test_an_event_just_within_grace_is_on_time():
    feed = Feed()
    call = CallCompleted("r", "outbound", "busy", team_id="t")
    state = new_state(grace_seconds=60)
    # minute [T0, T0+60) closes; grace ends at T0+120: watermark T0+119.5 keeps it open
    state.apply(feed.bundle(feed.events([(T0 + 119.5, call), (T0 + 1, call)])), 0)
    assert of(window(state, MINUTE, T0), "calls_made") == {("r", "t"): 1}
    state.apply(feed.bundle(feed.events([(T0 + 120, call), (T0 + 2, call)])), 1)
    assert of(window(state, MINUTE, T0), "calls_made") == {("r", "t"): 1}
    assert state.drain_counters()[2] == 1


def test_events_older_than_the_dedup_horizon_are_dropped_and_counted_late():
    feed = Feed()
    call = CallCompleted("r", "outbound", "busy", team_id="t")
    state = new_state(grace_seconds=60, dedup_horizon_seconds=600)
    state.apply(feed.bundle(feed.events([(T0 + 1000, call)])), 0)
    state.apply(feed.bundle(feed.events([(T0 + 400, call), (T0 + 401, call)])), 1)
    # T0+400 is exactly the horizon behind the watermark: dropped; T0+401 is kept (hour, day)
    assert of(window(state, HOUR, T0), "calls_made") == {("r", "t"): 2}
    assert of(window(state, MINUTE, T0 + 401), "calls_made") == {}
    processed, _, late = state.drain_counters()
    assert late == 2  # one dropped whole, one late for its minute
    assert processed["call.completed"] == 2
    # a copy of the dropped one is dropped again (late) rather than counted
    state.apply(feed.bundle([ev(99, T0 + 400, call, eid="id-dialer/acme-1")]), 2)
    assert of(window(state, HOUR, T0), "calls_made") == {("r", "t"): 2}
    assert state.drain_counters()[1:] == (0, 1)

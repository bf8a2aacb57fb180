"""The roster: teams by event time."""

from __future__ import annotations

from metrics.events import (
    CallCompleted,
    RepUpdated,
)
from metrics.state import UNASSIGNED
from tests.unit.metrics.state.support import (
    DAY,
    T0,
    Feed,
    ev,
    new_state,
    of,
    window,
)

# -- roster ------------------------------------------------------------------------------------


def test_team_comes_from_the_roster_whichever_arrives_first():
    call = CallCompleted("rep-x", "outbound", "busy")  # no team_id
    with_team = CallCompleted("rep-x", "outbound", "busy", team_id="team-explicit")
    roster = RepUpdated("rep-x", team_id="team-r")
    for roster_first in (True, False):
        feed = Feed()
        items = [(T0 + 1, call), (T0 + 2, with_team), (T0 + 3, call)]
        if roster_first:
            items.insert(0, (T0, roster))
        else:
            items.append((T0 + 4, roster))
        state = new_state()
        for i, e in enumerate(feed.events(items)):
            state.apply(feed.bundle([e]), i)
        made = of(window(state, DAY, T0), "calls_made")
        assert made == {("rep-x", "team-r"): 2, ("rep-x", "team-explicit"): 1}, roster_first


def test_unknown_rep_without_team_is_unassigned():
    feed = Feed()
    state = new_state()
    state.apply(feed.bundle(feed.events([(T0, CallCompleted("rep-y", "outbound", "busy"))])), 0)
    assert of(window(state, DAY, T0), "calls_made") == {("rep-y", UNASSIGNED): 1}
    # a roster entry without a team does not help either
    state.apply(feed.bundle(feed.events([(T0 + 1, RepUpdated("rep-y", region="emea"))])), 1)
    assert of(window(state, DAY, T0), "calls_made") == {("rep-y", UNASSIGNED): 1}


def test_roster_latest_by_event_time_wins():
    call = CallCompleted("rep-x", "outbound", "busy")
    newer = RepUpdated("rep-x", team_id="team-new")
    older = RepUpdated("rep-x", team_id="team-old")
    for order in ([(T0 + 100, newer), (T0 + 50, older)], [(T0 + 50, older), (T0 + 100, newer)]):
        feed = Feed()
        state = new_state()
        state.apply(feed.bundle(feed.events([(T0 + 10, call), *order])), 0)
        assert state.team_of("rep-x") == "team-new"
        assert state.roster["rep-x"].time == T0 + 100
        assert of(window(state, DAY, T0), "calls_made") == {("rep-x", "team-new"): 1}


def test_rep_updated_is_deduplicated_like_any_event():
    feed = Feed()
    state = new_state()
    up = RepUpdated("rep-x", team_id="team-a")
    state.apply(feed.bundle([ev(0, T0, up, eid="u"), ev(1, T0, up, eid="u")]), 0)
    processed, duplicates, _ = state.drain_counters()
    assert processed["rep.updated"] == 1 and duplicates == 1

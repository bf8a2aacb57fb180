"""The lead lane: responses filed, corrected and counted once."""

from __future__ import annotations

from metrics.events import (
    LANE_LEAD,
    Bundle,
    CallCompleted,
    LeadAssigned,
    LeadCreated,
    LeadLost,
)
from tests.unit.metrics.state.support import (
    T0,
    ev,
    new_state,
)

# -- leads -------------------------------------------------------------------------------------


def test_a_response_is_counted_once_with_its_settled_value():
    """The state reports leads whose response changed; ``count_response`` hands the current
    response out once. Here a ``lead.assigned`` gives the teamless lead a team after its touch:
    counted after that, the team is the assigned one; changes after the count are not counted
    again (the monitor counts them as corrections)."""
    state = new_state()
    events = [
        ev(0, T0, LeadCreated("lead-1", rep_id="rep-1")),
        ev(1, T0 + 30, CallCompleted("rep-2", "outbound", "busy", lead_id="lead-1")),
        ev(2, T0 + 40, LeadAssigned("lead-1", "rep-3", team_id="team-b")),
    ]
    for i, e in enumerate(events):
        state.apply(Bundle("sales.leads", 0, [e], LANE_LEAD), i)
    assert state.drain_response_changes() == {"lead-1"}
    assert state.drain_response_changes() == set()
    response = state.count_response("lead-1")
    assert (response.seconds, response.team) == (30.0, "team-b")
    assert state.count_response("lead-1") is None  # once
    state.apply(Bundle("sales.leads", 0, [ev(3, T0 + 10, CallCompleted("rep-2", "outbound", "busy",
                                                                       lead_id="lead-1"))], LANE_LEAD), 3)
    assert state.leads.leads["lead-1"].response.seconds == 10.0  # corrected in the windows
    assert state.drain_response_changes() == {"lead-1"}
    assert state.count_response("lead-1") is None


def test_a_response_withdrawn_before_it_is_counted_is_not_counted():
    """Touch read, then a loss earlier than that touch withdraws the response: nothing to count."""
    state = new_state()
    events = [
        ev(0, T0, LeadCreated("lead-1", rep_id="rep-1", team_id="t")),
        ev(1, T0 + 60, CallCompleted("rep-1", "outbound", "busy", lead_id="lead-1")),
        ev(2, T0 + 50, LeadLost("lead-1", "unresponsive")),
    ]
    for i, e in enumerate(events):
        state.apply(Bundle("sales.leads", 0, [e], LANE_LEAD), i)
    assert state.drain_response_changes() == {"lead-1"}
    assert state.leads.leads["lead-1"].response is None
    assert state.count_response("lead-1") is None


def test_the_lead_lanes_high_water_mark_follows_its_bundles():
    """A bundle wholly above its source's mark moves the mark to its last offset without a check
    per event; one that starts at or below it (a re-forward) skips what was applied and applies
    the rest, once."""
    state = new_state()
    src = ("sales.leads", 0, LANE_LEAD)
    events = [
        ev(0, T0, LeadCreated("lead-1", rep_id="rep-1", team_id="t")),
        ev(1, T0 + 60, CallCompleted("rep-1", "outbound", "busy", lead_id="lead-1")),
        ev(2, T0 + 30, CallCompleted("rep-1", "outbound", "busy", lead_id="lead-1")),
        ev(5, T0 + 90, LeadCreated("lead-2", rep_id="rep-1", team_id="t")),
    ]
    state.apply(Bundle("sales.leads", 0, events[:2], LANE_LEAD), 0)
    assert state.sources[src] == 1
    assert state.leads.leads["lead-1"].response.seconds == 60.0
    state.apply(Bundle("sales.leads", 0, events[1:], LANE_LEAD), 1)  # re-forwarded from offset 1
    assert state.sources[src] == 5
    assert state.leads.leads["lead-1"].response.seconds == 30.0  # the earlier touch, applied once
    assert set(state.leads.leads) == {"lead-1", "lead-2"}
    assert state.offset_resets == []  # a re-forward, not offsets gone backwards

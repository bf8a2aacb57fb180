"""Waiting leads are forgotten a wait horizon after their creation (event time, behind the
partition's watermark): removed from state and from its persisted lead part, counted, and a
touch that arrives for them later finds an unknown lead (no response time)."""

from __future__ import annotations

from datetime import UTC, datetime

from metrics.catalog import Catalog
from metrics.events import LANE_LEAD, Bundle, CallCompleted, Event, LeadCreated, ToolUsed
from metrics.leads import LEAD_WAIT_HORIZON_SECONDS, lead_part
from metrics.state import RESPONSE_SERIES, PartitionState
from metrics.windows import KIND_INDEX, Calendar

CAT = Catalog()
CAL = Calendar("UTC")
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC).timestamp()
DAY = 86400.0
HORIZON = LEAD_WAIT_HORIZON_SECONDS  # the default: 30 days


class Lane:
    """One source partition's events, forwarded in the lead lane, one bundle per event."""

    def __init__(self, state: PartitionState) -> None:
        self.state = state
        self.source_offset = 0
        self.offset = 0  # of the keyed-events partition

    def send(self, t: float, data: object, lane: int = LANE_LEAD) -> None:
        e = Event(self.source_offset, "crm/test", f"e-{self.source_offset}", t, data)
        self.source_offset += 1
        self.state.apply(Bundle("sales.leads", 0, [e], lane), self.offset)
        self.offset += 1


def created(lead: str) -> LeadCreated:
    return LeadCreated(lead, rep_id="rep-1", team_id="team-a")


def touch(lead: str) -> CallCompleted:
    return CallCompleted("rep-2", "outbound", "no_answer", team_id="team-a", lead_id=lead)


def responses(state: PartitionState) -> list[float]:
    start = CAL.bounds("quarter", T0)[0]
    return [x for key, xs in state.window_samples(KIND_INDEX["quarter"], start).items()
            if key[0] == RESPONSE_SERIES for x in xs]


def test_a_waiting_lead_is_forgotten_a_wait_horizon_after_its_creation():
    state = PartitionState(CAT, CAL)
    lane = Lane(state)
    lane.send(T0, created("lead-old"))
    lane.send(T0 + 2 * DAY, created("lead-young"))
    lane.send(T0 + 3 * DAY, created("lead-answered"))
    lane.send(T0 + 3 * DAY + 60, touch("lead-answered"))
    changelog = dict(state.snapshot())
    assert f"l/{lead_part('lead-old')}" in changelog
    lane.send(T0 + HORIZON - 1, ToolUsed("rep-9", "gong"))  # the watermark, not yet a horizon on
    state.expire()
    assert set(state.leads.waiting) == {"lead-old", "lead-young"}

    lane.send(T0 + HORIZON + 1, ToolUsed("rep-9", "gong"))  # any event moves the watermark
    state.expire()
    assert set(state.leads.waiting) == {"lead-young"}
    assert "lead-old" not in state.leads.leads
    assert "lead-answered" not in state.leads.leads  # settled: gone a dedup horizon after its last event
    assert state.leads.drain_expired() == 1
    assert state.leads.drain_expired() == 0
    # its persisted part is rewritten without it: a restore does not bring it back
    parts = dict(state.snapshot())
    assert f"l/{lead_part('lead-old')}" in parts
    changelog.update(parts)
    restored = PartitionState.restore(changelog.items(), CAT, CAL)
    assert "lead-old" not in restored.leads.leads
    assert set(restored.leads.waiting) == {"lead-young"}


def test_a_touch_after_the_horizon_finds_an_unknown_lead_whenever_expiry_ran():
    """The touch of a forgotten lead gives no response time, whether the expiry had already
    run when the touch arrived or not (a replay after a crash runs it at other moments)."""
    for expire_between in (True, False):
        state = PartitionState(CAT, CAL)
        lane = Lane(state)
        lane.send(T0, created("lead-1"))
        lane.send(T0 + HORIZON + 5, ToolUsed("rep-9", "gong"), lane=0)  # KPI lane: same watermark
        if expire_between:
            state.expire()
        lane.send(T0 + HORIZON + 10, touch("lead-1"))
        lead = state.leads.leads["lead-1"]
        assert (lead.created, lead.response) == (None, None), expire_between
        assert not state.leads.waiting
        assert responses(state) == []
        assert state.leads.drain_expired() == 1
        state.expire()
        assert state.leads.drain_expired() == 0  # counted once


def test_a_lead_created_earlier_again_is_judged_by_its_earliest_creation():
    state = PartitionState(CAT, CAL)
    lane = Lane(state)
    lane.send(T0 + 10 * DAY, created("lead-1"))
    lane.send(T0 + 9.5 * DAY, created("lead-1"))  # an earlier creation (out of order) wins
    lane.send(T0 + 9.5 * DAY + HORIZON + 1, ToolUsed("rep-9", "gong"))
    state.expire()
    assert not state.leads.waiting and state.leads.drain_expired() == 1


def test_the_wait_horizon_is_a_setting():
    state = PartitionState(CAT, CAL, lead_wait_horizon_seconds=3600.0)
    lane = Lane(state)
    lane.send(T0, created("lead-1"))
    lane.send(T0 + 3000, created("lead-2"))
    lane.send(T0 + 3601, ToolUsed("rep-9", "gong"))
    state.expire()
    assert set(state.leads.waiting) == {"lead-2"}


def test_the_index_of_waiting_leads_stays_bounded_when_leads_are_answered():
    state = PartitionState(CAT, CAL)
    lane = Lane(state)
    for i in range(5000):
        lane.send(T0 + i, created(f"lead-{i}"))
        lane.send(T0 + i + 1, touch(f"lead-{i}"))
    assert not state.leads.waiting
    assert len(state.leads._wait_heap) <= 2 * 1024 + 1

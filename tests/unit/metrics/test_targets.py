"""Targets (SPEC section 1): rep.updated targets turn a KPI into an attainment ratio per window;
teams and the organisation from the sums of their reps' values and targets."""

from __future__ import annotations

import pytest

from metrics.events import CallCompleted, OpportunityWon, RepUpdated
from metrics.windows import KIND_INDEX
from tests.unit.metrics.test_opportunities import CAL, T0, run, scopes

DAY, WEEK = KIND_INDEX["day"], KIND_INDEX["week"]


def calls(rep: str, n: int, t: float, team: str | None = None) -> list[tuple[float, object]]:
    return [(t + i, CallCompleted(rep, "outbound", "no_answer", team_id=team)) for i in range(n)]


def roster(rep: str, team: str, t: float = T0 - 60, **targets: dict[str, float]):
    return (t, RepUpdated(rep, team_id=team, targets=targets or None))


def test_rep_team_and_org_attainment_from_sums_of_values_and_targets():
    items = [roster("ann", "east", calls_made={"day": 60}, revenue={"quarter": 1000.0}),
             roster("bob", "east", calls_made={"day": 40}),
             roster("cid", "west", calls_made={"day": 50}),
             *calls("ann", 42, T0), *calls("bob", 30, T0), *calls("cid", 10, T0),
             (T0 + 99, OpportunityWon("o1", "ann", 250.0))]
    got = scopes(run(items, partitions=3), DAY, T0)
    assert got[("rep", "ann")][("calls_made_attainment_ratio",)] == pytest.approx(0.7)  # 42 of 60
    assert got[("team", "east")][("calls_made_attainment_ratio",)] == pytest.approx(72 / 100)
    assert got[("org",)][("calls_made_attainment_ratio",)] == pytest.approx(82 / 150)
    # a target names its window kind: a day target makes no week attainment
    week = scopes(run(items, partitions=3), WEEK, T0)
    assert ("calls_made_attainment_ratio",) not in week[("rep", "ann")]
    quarter = scopes(run(items), KIND_INDEX["quarter"], T0)
    assert quarter[("rep", "ann")][("revenue_attainment_ratio",)] == pytest.approx(0.25)


def test_a_rep_without_activity_has_attainment_zero_and_one_without_target_none():
    items = [roster("ann", "east", calls_made={"day": 60}), *calls("bob", 5, T0, "east")]
    got = scopes(run(items), DAY, T0)
    assert got[("rep", "bob")].get(("calls_made_attainment_ratio",)) is None
    assert got[("team", "east")][("calls_made_attainment_ratio",)] == pytest.approx(5 / 60)


def test_a_rep_who_moves_team_is_credited_to_the_new_team_from_the_change_on():
    move = T0 + 3600
    items = [roster("ann", "east", calls_made={"day": 60}),
             *calls("ann", 10, T0),  # no team_id: the roster's team at the event time
             (move, RepUpdated("ann", team_id="west", targets={"calls_made": {"day": 60}})),
             *calls("ann", 20, move + 60)]
    got = scopes(run(items), DAY, T0)
    assert got[("team", "east")][("calls_made",)] == 10
    assert got[("team", "west")][("calls_made",)] == 20
    # the target goes with the rep to its team at the window's end
    assert got[("team", "west")][("calls_made_attainment_ratio",)] == pytest.approx(20 / 60)
    assert ("calls_made_attainment_ratio",) not in got[("team", "east")]
    assert got[("rep", "ann")][("calls_made_attainment_ratio",)] == pytest.approx(30 / 60)


def test_a_team_change_read_late_still_tells_the_team_at_each_time():
    """The earlier change, read after the later one, keeps its place in the rep's history."""
    items = [(T0 + 7200, RepUpdated("ann", team_id="west")),
             (T0, RepUpdated("ann", team_id="east")),
             *calls("ann", 3, T0 + 60), *calls("ann", 4, T0 + 7260)]
    state = run(items, bundle=100)[0]
    entry = state.roster["ann"]
    assert entry.team_at(T0 + 60) == "east" and entry.team_at(T0 + 7260) == "west"
    got = scopes([state], DAY, T0)
    assert got[("team", "east")][("calls_made",)] == 3
    assert got[("team", "west")][("calls_made",)] == 4


def test_new_targets_republish_the_windows():
    state = run([roster("ann", "east"), *calls("ann", 2, T0)])[0]
    assert state.windows
    state.changed_windows.clear()
    from metrics.events import Bundle, Event

    state.apply(Bundle("sales.deals", 0, [Event(99, "crm", "t1", T0 + 10, RepUpdated(
        "ann", team_id="east", targets={"calls_made": {"day": 4}}))]), 99)
    assert (DAY, CAL.bounds("day", T0)[0]) in state.changed_windows
    assert scopes([state], DAY, T0)[("rep", "ann")][("calls_made_attainment_ratio",)] == 0.5

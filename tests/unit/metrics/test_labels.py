"""Bounded label cardinality (issue "Fail safe", item 5): a partition admits at most a cap of
distinct values per label (rep, team, each dimension); the rest is counted under ``other``.

Expected values are counted from the generated input, never read back from the service's code.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from metrics.catalog import Catalog
from metrics.events import (
    LANE_LEAD,
    Bundle,
    CallCompleted,
    Event,
    LeadCreated,
    LeadLost,
    RepUpdated,
    ToolUsed,
)
from metrics.labels import OTHER, LabelCaps
from metrics.rollup import rollup
from metrics.state import UNASSIGNED, PartitionState
from metrics.windows import KIND_INDEX, WINDOW_KINDS, Calendar
from tests.unit.metrics.state.crashes import GRACE, HORIZON, fingerprint, generate, run_with_crashes
from tests.unit.metrics.state.support import T0, apply_all

CAT = Catalog()
CAL = Calendar("UTC")
DAY = KIND_INDEX["day"]
TOPIC = "sales.activities"


def caps(reps: int = 1000, teams: int = 1000, dims: int = 1000) -> LabelCaps:
    return LabelCaps(reps=reps, teams=teams, dimension_values=dims)


def state_with(c: LabelCaps, **kw) -> PartitionState:
    return PartitionState(CAT, CAL, label_caps=c, **kw)


def bundles_of(datas, *, per_bundle: int = 50, t: float = T0 + 5, topic: str = TOPIC,
               lane: int = 0, first: int = 0) -> list[Bundle]:
    events = [Event(first + i, "test", f"e{first + i}", t + i * 0.001, d) for i, d in enumerate(datas)]
    return [Bundle(topic, 0, events[i : i + per_bundle], lane) for i in range(0, len(events), per_bundle)]


def day_values(state: PartitionState, kpi: str, t: float = T0) -> dict[tuple, float]:
    start = CAL.bounds("day", t)[0]
    return {k[1:]: v for k, v in state.window_values(DAY, start).items() if k[0] == kpi}


def test_more_reps_than_the_cap_keep_cap_plus_other_series_and_exact_sums():
    n_reps, cap, events_per_rep = 500, 40, 3
    datas = [CallCompleted(f"rep-{i % n_reps}", "outbound", "busy", team_id="t")
             for i in range(n_reps * events_per_rep)]
    state = state_with(caps(reps=cap))
    apply_all(state, bundles_of(datas))
    made = day_values(state, "calls_made")
    reps = {rep for rep, _team in made}
    assert len(reps) == cap + 1 and OTHER in reps
    # first come, first admitted: the first `cap` reps, each with all its events
    assert {rep for rep in reps if rep != OTHER} == {f"rep-{i}" for i in range(cap)}
    assert all(v == events_per_rep for (rep, _), v in made.items() if rep != OTHER)
    assert made[(OTHER, "t")] == (n_reps - cap) * events_per_rep
    assert sum(made.values()) == len(datas)  # the org total is every event
    assert len(state.labels["rep"]) == cap
    # every window kind, every scope: at most cap + 1 rep series per family
    for kind in range(len(WINDOW_KINDS)):
        start = CAL.bounds(WINDOW_KINDS[kind], T0)[0]
        values = rollup(CAT, [state.window_values(kind, start)], team_of=state.team_of)
        assert len({k[1] for k in values.rep if k[0] == "calls_made"}) == cap + 1
        assert values.org[("calls_made",)] == len(datas)
    assert state.overflow == Counter({"rep": (n_reps - cap) * events_per_rep})


def test_more_dimension_values_than_the_cap_go_to_other_per_dimension():
    n_tools, cap = 300, 5
    datas = [ToolUsed(f"rep-{i % 7}", f"tool-{i}", team_id="t") for i in range(n_tools)]
    datas += [LeadCreated(f"lead-{i}", rep_id="rep-0", team_id="t", source=f"src-{i}",
                          region=f"region-{i % 3}") for i in range(100)]
    datas += [LeadLost(f"lead-{i}", "competitor", rep_id="rep-0", team_id="t") for i in range(10)]
    state = state_with(caps(dims=cap))
    apply_all(state, bundles_of(datas))
    tools = day_values(state, "tool_uses")
    assert {k[2] for k in tools} == {*(f"tool-{i}" for i in range(cap)), OTHER}
    assert sum(tools.values()) == n_tools
    leads = day_values(state, "new_leads")
    assert {k[2] for k in leads} == {*(f"src-{i}" for i in range(cap)), OTHER}
    assert {k[3] for k in leads} == {"region-0", "region-1", "region-2"}  # under the cap: kept
    assert sum(leads.values()) == 100
    assert day_values(state, "leads_lost") == {("rep-0", "t", "competitor"): 10}
    # counted once per event and label (not per KPI reading the dimension)
    assert state.overflow == Counter({"tool": n_tools - cap, "source": 100 - cap})


def test_more_teams_than_the_cap_and_teams_from_the_roster():
    cap = 3
    roster = [RepUpdated(f"rep-{i}", team_id=f"roster-team-{i}") for i in range(6)]
    calls = [CallCompleted(f"rep-{i % 6}", "outbound", "busy") for i in range(60)]  # no team_id
    calls += [CallCompleted("rep-0", "outbound", "busy", team_id=f"team-{i}") for i in range(20)]
    state = state_with(caps(teams=cap))
    apply_all(state, bundles_of(roster + calls))
    assert len(state.labels["team"]) == cap
    made = day_values(state, "calls_made")
    assert {team for _, team in made} == {"roster-team-0", "roster-team-1", "roster-team-2", OTHER}
    assert sum(made.values()) == 80
    # reps whose roster team is beyond the cap are attributed to team "other", still by rep
    assert made[("rep-5", OTHER)] == 10 and made[("rep-0", "roster-team-0")] == 10
    assert made[("rep-0", OTHER)] == 20


def test_roster_is_bounded_and_other_reps_take_their_team_when_applied():
    cap = 2
    state = state_with(caps(reps=cap))
    items = [RepUpdated(f"rep-{i}", team_id="team-r") for i in range(50)]
    items += [CallCompleted(f"rep-{i}", "outbound", "busy") for i in range(50)]
    apply_all(state, bundles_of(items))
    assert set(state.roster) == {"rep-0", "rep-1"}  # beyond the cap: not kept
    made = day_values(state, "calls_made")
    assert made == {("rep-0", "team-r"): 1, ("rep-1", "team-r"): 1, (OTHER, UNASSIGNED): 48}


def test_without_caps_nothing_changes_and_no_label_parts_are_written():
    datas = [ToolUsed(f"rep-{i}", f"tool-{i}", team_id=f"t{i}") for i in range(100)]
    state = PartitionState(CAT, CAL)
    apply_all(state, bundles_of(datas))
    assert len(day_values(state, "tool_uses")) == 100
    assert not any(k.startswith("g/") for k, _ in state.snapshot())
    assert not state.overflow


def test_admitted_sets_are_persisted_and_a_restored_state_decides_alike():
    cap = 10
    first = [CallCompleted(f"rep-{i}", "outbound", "busy", team_id="t") for i in range(cap - 3)]
    later = [CallCompleted(f"rep-{i}", "outbound", "busy", team_id="t") for i in range(100)]
    state = state_with(caps(reps=cap))
    apply_all(state, bundles_of(first))
    parts = state.snapshot()
    assert "g/rep" in dict(parts)
    restored = PartitionState.restore(parts, CAT, CAL, label_caps=caps(reps=cap))
    assert restored.labels["rep"] == state.labels["rep"]
    rest = bundles_of(later, first=len(first))
    n = len(bundles_of(first))
    apply_all(state, rest, n)
    apply_all(restored, rest, n)
    assert day_values(restored, "calls_made") == day_values(state, "calls_made")
    assert len({rep for rep, _ in day_values(state, "calls_made")}) == cap + 1
    # a snapshot with no new admission writes no label part
    state.snapshot()
    apply_all(state, bundles_of(later[:5], first=1000), 1000)
    assert not any(k.startswith("g/") for k, _ in state.snapshot())


def test_lead_responses_of_reps_and_teams_beyond_the_cap_are_filed_under_other():
    cap = 2
    state = state_with(caps(reps=cap, teams=cap))
    created = [LeadCreated(f"lead-{i}", team_id=f"team-{i}") for i in range(6)]
    touches = [CallCompleted(f"rep-{i}", "outbound", "busy", lead_id=f"lead-{i}", team_id=f"team-{i}")
               for i in range(6)]
    lanes = [Bundle(TOPIC, 0, [Event(i, "test", f"c{i}", T0 + i, d)], LANE_LEAD)
             for i, d in enumerate(created)]
    lanes += [Bundle(TOPIC, 1, [Event(i, "test", f"t{i}", T0 + 60 + i, d)], LANE_LEAD)
              for i, d in enumerate(touches)]
    apply_all(state, lanes)
    start = CAL.bounds("day", T0)[0]
    samples = state.window_samples(DAY, start)
    assert {(rep, team) for _, rep, team in samples} == {
        ("rep-0", "team-0"), ("rep-1", "team-1"), (OTHER, OTHER)
    }
    assert sum(len(v) for v in samples.values()) == 6
    assert len(samples[("lead_response_seconds", OTHER, OTHER)]) == 4
    # the lead itself keeps its ids: alerts and business hours name the real team
    assert state.leads.leads["lead-5"].team == "team-5"
    counted = [state.count_response(lead) for lead in sorted(state.drain_response_changes())]
    assert Counter(r.team for r in counted) == Counter({"team-0": 1, "team-1": 1, OTHER: 4})


# -- crash exactness with caps ------------------------------------------------------------------


@pytest.mark.parametrize("block", range(2))
def test_crash_exactness_property_with_label_caps(block):
    """Random crashes (also mid-snapshot) with caps that the input exceeds (six reps, three
    teams, three tools) give the same state, admitted sets included, as one uninterrupted pass."""
    kw = {"grace_seconds": GRACE, "dedup_horizon_seconds": HORIZON,
          "label_caps": LabelCaps(reps=3, teams=1, dimension_values=2)}
    crashes = overflowed = 0
    for seed in range(block * 50, (block + 1) * 50):
        rng = random.Random(seed)
        bundles = generate(rng)
        reference = PartitionState(CAT, CAL, **kw)
        apply_all(reference, bundles)
        overflowed += sum(reference.overflow.values())
        state, n = run_with_crashes(bundles, rng, label_caps=kw["label_caps"])
        crashes += n
        assert fingerprint(state) == fingerprint(reference), f"seed {seed}"
        assert state.labels == reference.labels, f"seed {seed}"
        keys = {k for w in reference.windows.values() for k in w.values}
        assert len({k[1] for k in keys}) <= 3 + 1
        assert len({k[3] for k in keys if k[0] == "tool_uses"}) <= 2 + 1
    assert crashes >= 25 and overflowed > 1000


def test_caps_are_configured_in_settings(monkeypatch):
    from streams.settings import Settings

    for name in ("SALESPULSE_MAX_REPS", "SALESPULSE_MAX_TEAMS", "SALESPULSE_MAX_DIMENSION_VALUES"):
        monkeypatch.delenv(name, raising=False)
    s = Settings(_env_file=None)
    assert (s.max_reps, s.max_teams, s.max_dimension_values) == (20_000, 2_000, 200)
    monkeypatch.setenv("SALESPULSE_MAX_REPS", "7")
    monkeypatch.setenv("SALESPULSE_MAX_DIMENSION_VALUES", "3")
    s = Settings(_env_file=None)
    assert (s.max_reps, s.max_teams, s.max_dimension_values) == (7, 2_000, 3)


def test_keys_share_one_string_per_admitted_label_value():
    """Every event decodes its own copies of its rep, team and dimension strings; the state's
    keys hold the admitted one instead, in every window (memory: one str per label value, not
    one per event that made a key)."""
    def fresh(text: str) -> str:  # an equal but distinct str object, as a decoder makes them
        return "".join(list(text))

    datas = [CallCompleted(fresh(f"rep-{i % 7}"), fresh("outbound"), fresh(("busy", "connected")[i % 2]),
                           team_id=fresh(f"team-{i % 3}")) for i in range(600)]
    datas += [CallCompleted(fresh(f"rep-{i % 7}"), fresh("outbound"), fresh("busy")) for i in range(50)]
    datas += [ToolUsed(fresh(f"rep-{i % 7}"), fresh(("dialer", "crm")[i % 2]), team_id=fresh("team-0"))
              for i in range(100)]
    assert len({id(d.rep_id) for d in datas}) == len(datas)
    state = state_with(caps())
    for minute in range(5):  # events of several minutes: keys made again in each minute
        apply_all(state, bundles_of(datas, t=T0 + 60 * minute + 5, first=minute * 1000))
    objects: dict[str, set[int]] = {}
    for kind in range(len(WINDOW_KINDS)):
        for minute in range(5):
            start = CAL.bounds(WINDOW_KINDS[kind], T0 + 60 * minute)[0]
            for key in state.window_values(kind, start):
                for part in key[1:]:
                    if isinstance(part, str):
                        objects.setdefault(part, set()).add(id(part))
    assert {f"rep-{i}" for i in range(7)} | {f"team-{i}" for i in range(3)} <= set(objects)
    assert {"dialer", "crm"} <= set(objects)  # a dimension's values
    assert {text: len(ids) for text, ids in objects.items() if len(ids) > 1} == {}

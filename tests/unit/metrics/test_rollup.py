"""From stored sums per partition to rep, team and organisation values (SPEC section 3)."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime
from zlib import crc32

import pytest

from metrics.catalog import KPI, Catalog
from metrics.events import Bundle, CallCompleted, Event, LeadCreated, ToolUsed
from metrics.rollup import rollup
from metrics.state import PartitionState
from metrics.windows import KIND_INDEX, Calendar

CAT = Catalog([
    KPI(name="calls_made", help="h", aggregation="count", types=("call.completed",),
        where={"direction": "outbound"}),
    KPI(name="calls_connected", help="h", aggregation="count", types=("call.completed",),
        where={"direction": "outbound", "outcome": "connected"}),
    KPI(name="call_connect_ratio", help="h", aggregation="ratio", numerator="calls_connected",
        denominator="calls_made"),
    KPI(name="tool_uses", help="h", aggregation="count", types=("tool.used",), dimensions=("tool",)),
    KPI(name="new_leads", help="h", aggregation="count", types=("lead.created",)),
])
STORED = ("calls_made", "calls_connected", "tool_uses", "new_leads")


def random_partition(rng: random.Random, reps: list[tuple[str, str]]) -> dict[tuple, float]:
    values: dict[tuple, float] = {}
    for rep, team in reps:
        made = rng.randint(0, 20)
        if made:
            values[("calls_made", rep, team)] = float(made)
            connected = rng.randint(0, made)
            if connected:
                values[("calls_connected", rep, team)] = float(connected)
        for tool in ("gong", "linkedin"):
            if rng.random() < 0.7:
                values[("tool_uses", rep, team, tool)] = float(rng.randint(1, 9))
    values[("new_leads", None, reps[0][1])] = float(rng.randint(1, 5))  # a lead with no owner
    return values


def test_team_and_org_are_sums_across_partitions():
    rng = random.Random(5)
    partitions = [
        random_partition(rng, [("rep-1", "team-a"), ("rep-2", "team-b")]),
        random_partition(rng, [("rep-3", "team-a"), ("rep-4", "team-c")]),
        random_partition(rng, [("rep-5", "team-b"), ("rep-6", "team-a")]),
    ]
    out = rollup(CAT, partitions)
    exp_rep: dict[tuple, float] = defaultdict(float)
    exp_team: dict[tuple, float] = defaultdict(float)
    exp_org: dict[tuple, float] = defaultdict(float)
    for part in partitions:
        for (kpi, rep, team, *dims), v in part.items():
            if rep is not None:
                exp_rep[(kpi, rep, team, *dims)] += v
            exp_team[(kpi, team, *dims)] += v
            exp_org[(kpi, *dims)] += v

    def stored(values):
        return {k: v for k, v in values.items() if k[0] in STORED}

    assert stored(out.rep) == exp_rep
    assert stored(out.team) == exp_team
    assert stored(out.org) == exp_org
    # no rep series for the rep-less KPI
    assert not any(k[0] == "new_leads" for k in out.rep)
    # the org total of a dimensioned KPI keeps its dimension
    assert set(k for k in out.org if k[0] == "tool_uses") <= {("tool_uses", "gong"), ("tool_uses", "linkedin")}
    # ratios per scope from the summed parts
    for scope, exp in ((out.rep, exp_rep), (out.team, exp_team), (out.org, exp_org)):
        for key, made in exp.items():
            if key[0] != "calls_made":
                continue
            rest = key[1:]
            assert scope[("call_connect_ratio", *rest)] == pytest.approx(
                exp.get(("calls_connected", *rest), 0.0) / made
            )


def test_a_rep_split_over_partitions_is_summed():
    out = rollup(CAT, [{("calls_made", "r", "t"): 2.0}, {("calls_made", "r", "t"): 3.0}])
    assert out.rep[("calls_made", "r", "t")] == 5.0
    assert out.team[("calls_made", "t")] == 5.0
    assert out.org[("calls_made",)] == 5.0


def test_ratio_of_sums_not_average_of_ratios():
    partitions = [
        {("calls_made", "ann", "east"): 1.0, ("calls_connected", "ann", "east"): 1.0},
        {("calls_made", "bob", "east"): 9.0, ("calls_connected", "bob", "east"): 1.0},
        {("calls_made", "cid", "west"): 10.0, ("calls_connected", "cid", "west"): 5.0},
    ]
    out = rollup(CAT, partitions)
    assert out.rep[("call_connect_ratio", "ann", "east")] == 1.0
    assert out.rep[("call_connect_ratio", "bob", "east")] == pytest.approx(1 / 9)
    average_of_ratios = (1.0 + 1 / 9) / 2
    team = out.team[("call_connect_ratio", "east")]
    assert team == pytest.approx(2 / 10)
    assert team != pytest.approx(average_of_ratios)
    org = out.org[("call_connect_ratio",)]
    assert org == pytest.approx(7 / 20)
    assert org != pytest.approx((1.0 + 1 / 9 + 0.5) / 3)


def test_zero_denominators_give_no_ratio():
    partitions = [
        {("calls_made", "ann", "east"): 0.0},  # a key kept at zero
        {("calls_connected", "bob", "west"): 2.0},  # a numerator without denominator
        {("tool_uses", "cid", "north", "gong"): 1.0},
    ]
    out = rollup(CAT, partitions)
    for scope in (out.rep, out.team, out.org):
        assert not any(k[0] == "call_connect_ratio" for k in scope), scope
    assert out.rep[("calls_made", "ann", "east")] == 0.0


def test_previous_window_keys_appear_with_zero():
    previous = [
        {("calls_made", "ann", "east"): 4.0, ("calls_connected", "ann", "east"): 2.0,
         ("tool_uses", "ann", "east", "gong"): 3.0, ("new_leads", None, "east"): 2.0},
        {("calls_made", "bob", "west"): 1.0},
    ]
    current = [{("calls_made", "bob", "west"): 6.0}]
    out = rollup(CAT, current, previous)
    # ann was seen in the previous window only: every one of her series is there, at 0
    assert out.rep[("calls_made", "ann", "east")] == 0.0
    assert out.rep[("calls_connected", "ann", "east")] == 0.0
    assert out.rep[("tool_uses", "ann", "east", "gong")] == 0.0
    assert out.team[("calls_made", "east")] == 0.0
    assert out.team[("new_leads", "east")] == 0.0
    assert out.org[("tool_uses", "gong")] == 0.0
    assert out.org[("new_leads",)] == 0.0
    assert not any(k[0] == "new_leads" for k in out.rep)
    # bob's current value is not reset by his previous-window key
    assert out.rep[("calls_made", "bob", "west")] == 6.0
    assert out.org[("calls_made",)] == 6.0
    # a zero denominator: no ratio for ann, one for bob
    assert ("call_connect_ratio", "ann", "east") not in out.rep
    assert out.rep[("call_connect_ratio", "bob", "west")] == 0.0


def test_empty_input():
    out = rollup(CAT, [])
    assert (out.rep, out.team, out.org) == ({}, {}, {})


def test_rollup_of_partition_states_matches_the_events():
    """Events routed by rep to three partition states, rolled up: team and org values equal
    counts over the events, and the team ratio is the ratio of the team's counts."""
    rng = random.Random(9)
    cal = Calendar("UTC")
    t0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC).timestamp()
    teams = {f"rep-{i}": f"team-{i % 3}" for i in range(9)}
    states = [PartitionState(CAT, cal) for _ in range(3)]
    per_part: dict[int, list[Event]] = defaultdict(list)
    made: dict[str, int] = defaultdict(int)
    connected: dict[str, int] = defaultdict(int)
    tools: dict[tuple[str, str], int] = defaultdict(int)
    leads = 0
    for i in range(3000):
        rep = rng.choice(sorted(teams))
        team = teams[rep]
        r = rng.random()
        if r < 0.6:
            direction = rng.choice(["outbound", "inbound"])
            outcome = rng.choice(["connected", "no_answer", "voicemail"])
            data = CallCompleted(rep, direction, outcome, team_id=team)
            if direction == "outbound":
                made[team] += 1
                connected[team] += outcome == "connected"
        elif r < 0.9:
            tool = rng.choice(["gong", "linkedin"])
            data = ToolUsed(rep, tool, team_id=team)
            tools[(team, tool)] += 1
        else:
            data = LeadCreated(f"lead-{i}", team_id=team)
            leads += 1
        part = crc32(rep.encode()) % 3
        per_part[part].append(Event(len(per_part[part]), "src", f"e{i}", t0 + i, data))
    for p, events in per_part.items():
        for off, start in enumerate(range(0, len(events), 50)):
            states[p].apply(Bundle("sales.activities", p, events[start : start + 50]), off)
    day = KIND_INDEX["day"]
    start = cal.bounds("day", t0)[0]
    out = rollup(CAT, [s.window_values(day, start) for s in states])
    for team in set(teams.values()):
        assert out.team[("calls_made", team)] == made[team]
        assert out.team[("calls_connected", team)] == connected[team]
        assert out.team[("call_connect_ratio", team)] == pytest.approx(connected[team] / made[team])
    for (team, tool), n in tools.items():
        assert out.team[("tool_uses", team, tool)] == n
    assert out.org[("calls_made",)] == sum(made.values())
    assert out.org[("call_connect_ratio",)] == pytest.approx(
        sum(connected.values()) / sum(made.values())
    )
    assert out.org[("new_leads",)] == leads

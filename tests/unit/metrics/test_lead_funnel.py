"""The lead funnel KPIs of the default catalog, from events through state and roll-up.

Expected values are counted by hand from the events below (SPEC section 1: lost-lead ratio by
reason = lost / closed; SQL -> customer = converted / qualified as SQL; acquisition = converted
/ new leads).
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from metrics.catalog import Catalog
from metrics.events import Bundle, Event, LeadConverted, LeadCreated, LeadLost, LeadQualified
from metrics.rollup import rollup
from metrics.state import PartitionState
from metrics.windows import KIND_INDEX, Calendar

T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC).timestamp()
DAY = KIND_INDEX["day"]


def _day_values(events: list) -> dict:
    cat, cal = Catalog(), Calendar()
    state = PartitionState(cat, cal)
    bundle = Bundle("sales.leads", 0, [Event(i, "crm", f"e{i}", T0 + i, d) for i, d in enumerate(events)])
    state.apply(bundle, 0)
    start, _ = cal.bounds("day", T0)
    return rollup(cat, [state.window_values(DAY, start)], team_of=state.team_of).__dict__


def test_funnel_counts_and_ratios_per_team_and_org() -> None:
    events = [
        # team-a: 4 new leads (2 web/emea, 1 web/amer, 1 referral/emea)
        LeadCreated("a1", rep_id="r1", team_id="team-a", source="web", region="emea"),
        LeadCreated("a2", rep_id="r1", team_id="team-a", source="web", region="emea"),
        LeadCreated("a3", rep_id="r2", team_id="team-a", source="web", region="amer"),
        LeadCreated("a4", rep_id="r2", team_id="team-a", source="referral", region="emea"),
        LeadQualified("a1", "sql", rep_id="r1", team_id="team-a"),
        LeadQualified("a2", "sql", rep_id="r1", team_id="team-a"),
        LeadQualified("a3", "mql", rep_id="r2", team_id="team-a"),  # MQL: not in the SQL base
        LeadConverted("a1", rep_id="r1", team_id="team-a"),
        LeadLost("a2", "competitor", rep_id="r1", team_id="team-a"),
        LeadLost("a3", "competitor", rep_id="r2", team_id="team-a"),
        LeadLost("a4", "no_decision", rep_id="r2", team_id="team-a"),
        # team-b: 1 new lead, converted
        LeadCreated("b1", rep_id="r3", team_id="team-b", source="event", region="apac"),
        LeadQualified("b1", "sql", rep_id="r3", team_id="team-b"),
        LeadConverted("b1", rep_id="r3", team_id="team-b"),
    ]
    v = _day_values(events)
    team, org = v["team"], v["org"]
    assert team[("new_leads", "team-a", "web", "emea")] == 2
    assert team[("new_leads", "team-a", "referral", "emea")] == 1
    assert org[("new_leads", "event", "apac")] == 1
    # team-a closed 4 (1 converted + 3 lost): competitor 2/4, no_decision 1/4
    assert team[("lost_lead_ratio", "team-a", "competitor")] == pytest.approx(2 / 4)
    assert team[("lost_lead_ratio", "team-a", "no_decision")] == pytest.approx(1 / 4)
    assert ("lost_lead_ratio", "team-b", "competitor") not in team  # nothing lost there
    # org closed 5 (2 converted + 3 lost)
    assert org[("lost_lead_ratio", "competitor")] == pytest.approx(2 / 5)
    # SQL -> customer: team-a 1 converted / 2 SQL; org 2 / 3
    assert team[("sql_to_customer_ratio", "team-a")] == pytest.approx(1 / 2)
    assert org[("sql_to_customer_ratio",)] == pytest.approx(2 / 3)
    # acquisition: converted / created: team-a 1/4, team-b 1/1, org 2/5
    assert team[("customer_acquisition_ratio", "team-a")] == pytest.approx(1 / 4)
    assert team[("customer_acquisition_ratio", "team-b")] == pytest.approx(1.0)
    assert org[("customer_acquisition_ratio",)] == pytest.approx(2 / 5)
    # per rep: r2 lost 2 of the 2 leads it closed
    rep = v["rep"]
    assert rep[("lost_lead_ratio", "r2", "team-a", "competitor")] == pytest.approx(1 / 2)
    assert rep[("lost_lead_ratio", "r2", "team-a", "no_decision")] == pytest.approx(1 / 2)

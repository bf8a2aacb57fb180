"""The declarative KPI catalog: validation, compilation, and "adding a KPI needs no code"."""

from __future__ import annotations

import random
from collections import Counter
from datetime import UTC, datetime

import pytest

from metrics.catalog import (
    DEFAULT_CATALOG,
    KPI,
    PRESENT,
    Catalog,
    CatalogError,
    load_catalog,
)
from metrics.events import (
    Bundle,
    CallCompleted,
    EmailSent,
    Event,
    OpportunityWon,
    ToolUsed,
)
from metrics.state import PartitionState
from metrics.windows import KIND_INDEX, WINDOW_KINDS, Calendar

# The windowed KPIs SPEC section 3 names for the activity family.
SPEC_ACTIVITY_NAMES = {
    "calls_made",
    "calls_connected",
    "call_connect_ratio",
    "calls_received",
    "talk_seconds",
    "average_handle_seconds",
    "emails_sent",
    "emails_automated",
    "conversations",
    "meetings_scheduled",
    "crm_updates",
    "tool_uses",
    "customer_engagements",
}

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC).timestamp()  # a Monday morning


def count(kpi: str, **kw) -> KPI:
    return KPI(name=kpi, help="h", aggregation="count", types=kw.pop("types", ("email.sent",)), **kw)


# -- the default catalog --------------------------------------------------------------------


def test_default_catalog_compiles():
    cat = Catalog()
    assert cat.kpis == DEFAULT_CATALOG
    names = set(cat.by_name)
    assert names >= SPEC_ACTIVITY_NAMES
    assert len(names) == len(cat.kpis)
    for kpi in cat.derived:
        num, den = cat.by_name[kpi.numerator], cat.by_name[kpi.denominator]
        assert num.aggregation != "ratio" and den.aggregation != "ratio"
    for kpi in cat.kpis:
        if kpi.aggregation not in ("count", "sum"):
            continue
        assert kpi.types, kpi.name
        assert cat.kinds_of[kpi.name] == tuple(WINDOW_KINDS.index(w) for w in kpi.windows)
        for t in kpi.types:
            ruled = {r.kpi for r in cat.rules_by_type.get(t, ())}
            # a computed value is filled by the state (metrics.opportunities), not a rule
            assert (kpi.name in ruled) != (kpi.computed is not None), kpi.name


def test_default_catalog_exports_the_spec_names_and_hides_ratio_parts():
    cat = Catalog()
    exported = {k.name for k in cat.kpis if k.exported}
    assert exported >= SPEC_ACTIVITY_NAMES
    aht = cat.by_name["average_handle_seconds"]
    assert not cat.by_name[aht.numerator].exported
    assert not cat.by_name[aht.denominator].exported
    ratio = cat.by_name["call_connect_ratio"]
    assert (ratio.numerator, ratio.denominator) == ("calls_connected", "calls_made")
    assert cat.by_name["tool_uses"].dimensions == ("tool",)


def test_every_activity_kpi_is_kept_for_every_window_kind():
    cat = Catalog()
    for name in SPEC_ACTIVITY_NAMES:
        assert cat.windows_of(name) == WINDOW_KINDS


# -- validation ---------------------------------------------------------------------------------


def test_duplicate_name():
    with pytest.raises(CatalogError, match="twice"):
        Catalog([count("a"), count("a")])


@pytest.mark.parametrize(
    ("num", "den"),
    [("a", "nope"), ("nope", "a"), (None, "a"), ("a", None), ("a", "r0")],
)
def test_ratio_parts_must_be_stored_kpis(num, den):
    kpis = [
        count("a"),
        count("b"),
        KPI(name="r0", help="h", aggregation="ratio", numerator="a", denominator="b"),
        KPI(name="r", help="h", aggregation="ratio", numerator=num, denominator=den),
    ]
    with pytest.raises(CatalogError, match="'r'"):
        Catalog(kpis)


def test_ratio_defined_before_its_parts_is_fine():
    kpis = [
        KPI(name="r", help="h", aggregation="ratio", numerator="a", denominator="b"),
        count("a"),
        count("b"),
    ]
    assert [k.name for k in Catalog(kpis).derived] == ["r"]


def test_sum_without_fields():
    with pytest.raises(CatalogError, match="sum needs fields"):
        Catalog([KPI(name="s", help="h", aggregation="sum", types=("call.completed",))])


def test_count_without_types():
    with pytest.raises(CatalogError):
        Catalog([KPI(name="c", help="h", aggregation="count")])


def test_unknown_window():
    with pytest.raises(CatalogError, match="fortnight"):
        Catalog([count("c", windows=("day", "fortnight"))])
    with pytest.raises(CatalogError):
        Catalog([KPI(name="r", help="h", aggregation="ratio", numerator="a", denominator="a",
                     windows=("year",)), count("a")])


def test_ratio_windows_are_those_of_both_parts():
    cat = Catalog([
        count("a", windows=("hour", "day", "week")),
        count("b", windows=("day", "week", "month")),
        KPI(name="r", help="h", aggregation="ratio", numerator="a", denominator="b",
            windows=("minute", "day", "week")),
    ])
    assert cat.windows_of("r") == ("day", "week")
    assert cat.windows_of("a") == ("hour", "day", "week")


# -- load_catalog -------------------------------------------------------------------------------


USER_CATALOG = [
    {   # calls to existing customers that reached someone or a voicemail, per outcome
        "name": "customer_calls",
        "help": "Calls to customers that reached someone or a mailbox.",
        "aggregation": "count",
        "types": ["call.completed"],
        "where": {"customer_id": "$present", "outcome": ["connected", "voicemail"]},
        "dimensions": ["outcome"],
        "windows": ["hour", "day"],
    },
    {
        "name": "won_revenue",
        "help": "Revenue won, per deal type.",
        "aggregation": "sum",
        "types": ["opportunity.won"],
        "fields": ["amount"],
        "dimensions": ["deal_type"],
    },
    {
        "name": "won_deals",
        "help": "Deals won.",
        "aggregation": "count",
        "types": ["opportunity.won"],
    },
    {
        "name": "deal_size",
        "help": "Average deal size.",
        "aggregation": "ratio",
        "numerator": "won_revenue",
        "denominator": "won_deals",
    },
    {
        "name": "manual_emails_to_leads",
        "help": "Emails by a person to a lead.",
        "aggregation": "count",
        "types": ["email.sent"],
        "where": {"automated": False, "lead_id": "$present"},
        "windows": ["minute", "hour", "day", "week", "month", "quarter"],
    },
]


def test_load_catalog_builds_entries_from_plain_data():
    kpis = load_catalog(USER_CATALOG)
    assert [k.name for k in kpis] == [e["name"] for e in USER_CATALOG]
    first = kpis[0]
    assert first.where["customer_id"] == PRESENT
    assert first.where["outcome"] == ["connected", "voicemail"]
    assert first.types == ("call.completed",)
    assert first.windows == ("hour", "day")
    assert kpis[1].fields == ("amount",)
    assert kpis[2].windows == WINDOW_KINDS  # default
    cat = Catalog((*DEFAULT_CATALOG, *kpis))
    assert {"customer_calls", "won_revenue", "deal_size"} <= set(cat.by_name)
    assert [k.name for k in cat.derived if k.name == "deal_size"]


@pytest.mark.parametrize(
    "entry",
    [
        {"name": "x", "help": "h", "aggregation": "median", "types": ["email.sent"]},
        {"name": "x", "help": "h", "aggregation": "count", "types": "email.sent", "fields": 3},
        {"help": "h", "aggregation": "count", "types": ["email.sent"]},
        {"name": "x", "aggregation": "count", "types": ["email.sent"]},
    ],
)
def test_load_catalog_rejects_bad_entries(entry):
    with pytest.raises(CatalogError):
        load_catalog([entry])


def _ev(i: int, t: float, data) -> Event:
    return Event(i, "crm/test", f"e-{i}", t, data)


def test_a_user_kpi_counts_the_right_events_without_code():
    """Generated input; the expected values are counted from the input directly."""
    rng = random.Random(7)
    cat = Catalog((*DEFAULT_CATALOG, *load_catalog(USER_CATALOG)))
    state = PartitionState(cat, Calendar("UTC"))
    events = []
    expected_calls: Counter = Counter()
    expected_revenue: Counter = Counter()
    expected_deals: Counter = Counter()
    expected_emails: Counter = Counter()
    reps = ["rep-1", "rep-2", "rep-3"]
    for i in range(3000):
        t = T0 + rng.uniform(0, 3 * 3600)  # three hours
        rep = rng.choice(reps)
        kind = rng.random()
        if kind < 0.5:
            outcome = rng.choice(["connected", "no_answer", "voicemail", "busy", "failed"])
            customer = rng.choice([None, "cust-1", "cust-2"])
            data = CallCompleted(rep, rng.choice(["outbound", "inbound"]), outcome,
                                 team_id="team-a", customer_id=customer)
            if customer is not None and outcome in ("connected", "voicemail"):
                expected_calls[(rep, outcome)] += 1
        elif kind < 0.7:
            amount = float(rng.randint(100, 10_000))
            deal = rng.choice(["new", "upsell", "cross_sell", "renewal"])
            data = OpportunityWon(f"opp-{i}", rep, amount, team_id="team-a", deal_type=deal)
            expected_revenue[(rep, deal)] += amount
            expected_deals[rep] += 1
        elif kind < 0.9:
            automated = rng.random() < 0.5
            lead = rng.choice([None, "lead-1"])
            data = EmailSent(rep, team_id="team-a", lead_id=lead, automated=automated)
            if not automated and lead is not None:
                expected_emails[rep] += 1
        else:
            data = ToolUsed(rep, "gong", team_id="team-a")
        events.append(_ev(i, t, data))
    events.sort(key=lambda e: e.time)
    events = [Event(i, e.source, e.id, e.time, e.data) for i, e in enumerate(events)]
    for off, start in enumerate(range(0, len(events), 100)):
        state.apply(Bundle("sales.activities", 0, events[start : start + 100]), off)

    day = KIND_INDEX["day"]
    values = state.window_values(day, Calendar("UTC").bounds("day", T0)[0])
    got_calls = {(k[1], k[3]): v for k, v in values.items() if k[0] == "customer_calls"}
    assert got_calls == {k: float(v) for k, v in expected_calls.items()}
    got_rev = {(k[1], k[3]): v for k, v in values.items() if k[0] == "won_revenue"}
    assert got_rev == pytest.approx(dict(expected_revenue))
    got_deals = {k[1]: v for k, v in values.items() if k[0] == "won_deals"}
    assert got_deals == {k: float(v) for k, v in expected_deals.items()}
    got_emails = {k[1]: v for k, v in values.items() if k[0] == "manual_emails_to_leads"}
    assert got_emails == {k: float(v) for k, v in expected_emails.items()}

    # customer_calls is kept for hour and day only
    minute_start = Calendar("UTC").bounds("minute", events[0].time)[0]
    assert not any(k[0] == "customer_calls" for k in state.window_values(0, minute_start))
    assert any(k[0] == "won_deals" for k in state.window_values(KIND_INDEX["quarter"], Calendar(
        "UTC").bounds("quarter", T0)[0]))
    hourly = Counter()
    for h in range(3):
        start = T0 + h * 3600
        for k, v in state.window_values(KIND_INDEX["hour"], start).items():
            if k[0] == "customer_calls":
                hourly[(k[1], k[3])] += v
    assert hourly == {k: float(v) for k, v in expected_calls.items()}
    # the default KPIs are still there, unaffected
    made = sum(v for k, v in values.items() if k[0] == "calls_made")
    assert made == sum(
        1 for e in events if e.type == "call.completed" and e.data.direction == "outbound"
    )


def test_conditions_compile_as_declared():
    cat = Catalog([
        count("eq", types=("call.completed",), where={"direction": "inbound"}),
        count("in", types=("call.completed",), where={"outcome": ["busy", "failed"]}),
        count("present", types=("call.completed",), where={"lead_id": PRESENT}),
        count("both", types=("call.completed",), where={"direction": "inbound", "lead_id": PRESENT}),
        KPI(name="s", help="h", aggregation="sum", types=("call.completed",),
            fields=("talk_seconds", "wrap_seconds")),
    ])
    rules = {r.kpi: r for r in cat.rules_by_type["call.completed"]}
    calls = [
        CallCompleted("r", d, o, lead_id=lead, talk_seconds=ts, wrap_seconds=ws)
        for d in ("inbound", "outbound")
        for o in ("connected", "busy", "failed", "voicemail")
        for lead in (None, "l")
        for ts, ws in ((0.0, 0.0), (30.0, 12.0))
    ]
    for c in calls:
        assert rules["eq"].match(c) == (c.direction == "inbound")
        assert rules["in"].match(c) == (c.outcome in ("busy", "failed"))
        assert rules["present"].match(c) == (c.lead_id is not None)
        assert rules["both"].match(c) == (c.direction == "inbound" and c.lead_id is not None)
        assert rules["s"].value(c) == c.talk_seconds + c.wrap_seconds
        assert rules["eq"].value(c) == 1.0


def test_dimension_of_a_missing_value_is_unknown():
    cat = Catalog([count("by_lead", types=("call.completed",), dimensions=("lead_id",))])
    (rule,) = cat.rules_by_type["call.completed"]
    assert rule.dims(CallCompleted("r", "inbound", "busy", lead_id="l-9")) == ("l-9",)
    assert rule.dims(CallCompleted("r", "inbound", "busy")) == ("unknown",)


@pytest.mark.parametrize(
    "entry, message",
    [
        (dict(types=("call.teleported",)), "unknown event type"),
        (dict(types=("call.completed",), where={"no_such_field": "x"}), "no field 'no_such_field'"),
        (dict(types=("call.completed",), dimensions=("toool",)), "no field 'toool'"),
        (dict(types=("email.sent", "tool.used"), dimensions=("tool",)), "email.sent has no field 'tool'"),
    ],
)
def test_a_typo_in_a_kpi_entry_is_an_error_not_a_silent_zero(entry: dict, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        Catalog([KPI(name="k", help="h", aggregation="count", **entry)])


def test_the_readme_kpi_table_lists_every_exported_kpi_with_its_windows_and_labels():
    from pathlib import Path

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    rows = {}
    for line in readme.splitlines():
        if line.startswith("| `") and line.count("|") == 6:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0].strip("`")] = cells
    cat = Catalog()
    for kpi in cat.kpis:
        if not kpi.exported:
            assert kpi.name not in rows, kpi.name
            continue
        if kpi.name.endswith("_attainment_ratio"):  # one row for all: <kpi>_attainment_ratio
            assert kpi.numerator in rows and "<kpi>_attainment_ratio" in rows
            continue
        name, _, windows, scopes, labels = rows[kpi.name]
        want = cat.windows_of(kpi.name)
        assert windows == ("all" if want == WINDOW_KINDS else ", ".join(want)), kpi.name
        assert scopes == ", ".join(kpi.scopes), kpi.name
        assert labels == ", ".join(f"`{d}`" for d in cat.dimensions_of(kpi.name)), kpi.name

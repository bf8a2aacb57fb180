"""Pipeline, revenue and customer KPIs (SPEC section 1): per rep, team and organisation.

Expected values are computed straight from the generated opportunities with the SPEC
definitions (:func:`spec_deals`), never read back from the catalog. Values per scope come from
the same three roll-up steps the service runs (split per partition, merge, finish).
"""

from __future__ import annotations

import random
import statistics
from collections import defaultdict
from datetime import UTC, datetime

import pytest

from metrics.catalog import KPI, Catalog, CatalogError
from metrics.events import (
    Bundle,
    CallCompleted,
    EnpsResponded,
    Event,
    LeadConverted,
    NpsResponded,
    OpportunityCreated,
    OpportunityLost,
    OpportunityWon,
    RepUpdated,
    SpendRecorded,
)
from metrics.extras import window_values
from metrics.rollup import finish, merge, split
from metrics.sketch import SKETCH_ACCURACY, Sketch
from metrics.state import PartitionState
from metrics.windows import KIND_INDEX, Calendar

CAT = Catalog()
CAL = Calendar("UTC")
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC).timestamp()  # Monday
DAY, QUARTER = KIND_INDEX["day"], KIND_INDEX["quarter"]
REPS = {"rep-1": ("team-a", "emea"), "rep-2": ("team-a", "amer"), "rep-3": ("team-b", "amer")}


class Deal:
    def __init__(self, i: int, rng: random.Random) -> None:
        self.id = f"opp-{i}"
        self.rep = rng.choice(sorted(REPS))
        self.team, self.region = REPS[self.rep]
        self.created = T0 + rng.randint(0, 3 * 3600)
        self.amount = float(rng.randint(1, 90) * 1000)
        outcome = rng.random()
        self.outcome = "won" if outcome < 0.5 else "lost" if outcome < 0.8 else "open"
        self.closed = self.created + rng.randint(60, 5 * 3600)
        self.deal_type = rng.choice(["new", "new", "upsell", "cross_sell", "renewal"])
        self.customer = rng.choice([None, "cust-1", "cust-2", "cust-3", f"cust-x{i}"])
        self.reason = rng.choice(["price", "competitor", None])

    def events(self) -> list[tuple[float, object]]:
        out: list[tuple[float, object]] = [(self.created, OpportunityCreated(
            self.id, self.rep, team_id=self.team, amount=self.amount, region=self.region))]
        if self.outcome == "won":
            out.append((self.closed, OpportunityWon(
                self.id, self.rep, self.amount, team_id=self.team, region=self.region,
                customer_id=self.customer, deal_type=self.deal_type)))
        elif self.outcome == "lost":
            out.append((self.closed, OpportunityLost(
                self.id, self.rep, team_id=self.team, reason=self.reason, region=self.region)))
        return out


def deals(n: int = 120, seed: int = 3) -> list[Deal]:
    rng = random.Random(seed)
    return [Deal(i, rng) for i in range(n)]


def as_events(items: list[tuple[float, object]], source: str = "crm/test") -> list[Event]:
    return [Event(i, source, f"id-{i}", t, d) for i, (t, d) in enumerate(items)]


def run(items: list[tuple[float, object]], *, partitions: int = 1, bundle: int = 7,
        shuffle: random.Random | None = None, grace: float = 86400.0) -> list[PartitionState]:
    """Apply the events (each rep's in its partition) and return the partition states."""
    events = as_events(items)
    if shuffle is not None:
        shuffle.shuffle(events)
        for i, e in enumerate(events):
            events[i] = Event(i, e.source, e.id, e.time, e.data)
    states = [PartitionState(CAT, CAL, grace_seconds=grace) for _ in range(partitions)]
    by_part: dict[int, list[Event]] = defaultdict(list)
    for e in events:
        key = getattr(e.data, "rep_id", None) or getattr(e.data, "team_id", None) or e.id
        by_part[sum(map(ord, key)) % partitions].append(e)
    for p, evs in by_part.items():
        for i in range(0, len(evs), bundle):
            states[p].apply(Bundle("sales.deals", p, evs[i : i + bundle]), i // bundle)
    return states


def scopes(states: list[PartitionState], kind: int, t: float) -> dict[tuple, dict[tuple, float]]:
    """Finished values keyed ("rep", rep) / ("team", team) / ("org",), from every partition."""
    start = CAL.bounds(("minute", "hour", "day", "week", "month", "quarter")[kind], t)[0]
    reps: dict[str, list] = defaultdict(list)
    teams: dict[str, list] = defaultdict(list)
    orgs = []
    for st in states:
        w = st.windows.get((kind, start))
        if w is None:
            continue
        r, tm, o = split(window_values(st, w), w.samples, st.team_of)
        for (rep, _), p in r.items():
            reps[rep].append(p)
        for team, p in tm.items():
            teams[team].append(p)
        orgs.append(o)
    out = {("rep", rep): finish(CAT, merge(ps)) for rep, ps in reps.items()}
    out.update({("team", team): finish(CAT, merge(ps)) for team, ps in teams.items()})
    out[("org",)] = finish(CAT, merge(orgs))
    return out


def spec_deals(ds: list[Deal], end: float) -> dict[tuple, dict[tuple, float]]:
    """SPEC section 1 deal KPIs of one window (all of ``ds`` fall in it), per scope."""
    groups: dict[tuple, list[Deal]] = defaultdict(list)
    for d in ds:
        for scope in (("rep", d.rep), ("team", d.team), ("org",)):
            groups[scope].append(d)
    out: dict[tuple, dict[tuple, float]] = {}
    for scope, group in groups.items():
        won = [d for d in group if d.outcome == "won" and d.closed < end]
        lost = [d for d in group if d.outcome == "lost" and d.closed < end]
        v: dict[tuple, float] = {("opportunities_created",): float(len(group))}
        is_open = [d for d in group if d.outcome == "open" or d.closed >= end]
        if is_open:
            v[("opportunities_open",)] = float(len(is_open))
        if won:
            revenue = sum(d.amount for d in won)
            cycles = [d.closed - d.created for d in won]
            v[("opportunities_won",)] = float(len(won))
            v[("revenue",)] = revenue
            v[("average_deal_size",)] = revenue / len(won)
            v[("sales_cycle_seconds_avg",)] = statistics.fmean(cycles)
            v[("upsell_cross_sell_ratio",)] = (
                sum(d.deal_type in ("upsell", "cross_sell") for d in won) / len(won))
            customers = {d.customer for d in won if d.customer}
            if customers:
                v[("customers_won",)] = float(len(customers))
                v[("average_basket",)] = sum(d.amount for d in won if d.customer) / len(customers)
            for region in {d.region for d in won}:
                rw = [d for d in won if d.region == region]
                v[("revenue_by_region", region)] = sum(d.amount for d in rw)
                v[("deals_won_by_region", region)] = float(len(rw))
                v[("average_deal_size_by_region", region)] = sum(d.amount for d in rw) / len(rw)
                v[("sales_cycle_seconds_avg_by_region", region)] = statistics.fmean(
                    d.closed - d.created for d in rw)
        for reason in {d.reason or "unknown" for d in lost}:
            v[("opportunities_lost", reason)] = float(sum((d.reason or "unknown") == reason for d in lost))
        if won or lost:
            v[("win_ratio",)] = len(won) / (len(won) + len(lost))
            for region in {d.region for d in won + lost}:
                rw = [d for d in won if d.region == region]
                rc = [d for d in won + lost if d.region == region]
                v[("win_ratio_by_region", region)] = len(rw) / len(rc)
        out[scope] = v
    return out


def exported(values: dict[tuple, float], names: set[str]) -> dict[tuple, float]:
    return {k: v for k, v in values.items() if k[0] in names}


NAMES = {
    "opportunities_created", "opportunities_open", "opportunities_won", "opportunities_lost",
    "win_ratio", "revenue", "average_deal_size", "sales_cycle_seconds_avg",
    "upsell_cross_sell_ratio", "customers_won", "average_basket", "revenue_by_region",
    "deals_won_by_region", "average_deal_size_by_region", "sales_cycle_seconds_avg_by_region",
    "win_ratio_by_region",
}


def assert_close(got: dict[tuple, dict[tuple, float]], want: dict[tuple, dict[tuple, float]]) -> None:
    assert set(want) <= set(got)
    for scope, values in want.items():
        mine = exported(got[scope], NAMES)
        assert set(mine) == set(values), (scope, set(mine) ^ set(values))
        for key, v in values.items():
            assert mine[key] == pytest.approx(v, rel=1e-9), (scope, key)


@pytest.mark.parametrize("partitions", [1, 3])
def test_deal_kpis_per_rep_team_and_org_match_the_spec(partitions):
    ds = deals()
    items = [e for d in ds for e in d.events()]
    items.sort(key=lambda x: x[0])
    states = run(items, partitions=partitions)
    end = CAL.bounds("day", T0)[1]
    assert_close(scopes(states, DAY, T0), spec_deals(ds, end))
    assert_close(scopes(states, QUARTER, T0), spec_deals(ds, CAL.bounds("quarter", T0)[1]))


def test_out_of_order_and_duplicated_deal_events_give_the_in_order_result():
    ds = deals(seed=11)
    items = [e for d in ds for e in d.events()]
    items.sort(key=lambda x: x[0])
    in_order = scopes(run(items), DAY, T0)
    dup = items + items[::3]  # the same events again: recognised by (source, id)
    events = as_events(items) + [e for e in as_events(items)[::3]]
    assert len(events) == len(dup)
    rng = random.Random(5)
    rng.shuffle(events)
    state = PartitionState(CAT, CAL, grace_seconds=86400.0)
    for i in range(0, len(events), 5):
        chunk = [Event(j, e.source, e.id, e.time, e.data) for j, e in enumerate(events[i : i + 5], i)]
        state.apply(Bundle("sales.deals", 0, chunk), i // 5)
    shuffled = scopes([state], DAY, T0)
    assert state.duplicates == len(items[::3])
    for scope, values in in_order.items():
        assert shuffled[scope] == pytest.approx(values), scope
    # the won-before-created deals really were exercised
    assert any(e.type == "opportunity.won" for e in events[: len(events) // 3])


def test_an_earlier_created_event_read_later_moves_the_cycle():
    won = (T0 + 7200, OpportunityWon("o", "rep-1", 100.0, team_id="team-a", region="emea"))
    states = run([(T0 + 3600, OpportunityCreated("o", "rep-1", team_id="team-a")), won])
    assert scopes(states, DAY, T0)[("rep", "rep-1")][("sales_cycle_seconds_avg",)] == 3600
    states = run([(T0 + 3600, OpportunityCreated("o", "rep-1", team_id="team-a")), won,
                  (T0, OpportunityCreated("o", "rep-1", team_id="team-a"))])
    v = scopes(states, DAY, T0)[("rep", "rep-1")]
    assert v[("sales_cycle_seconds_avg",)] == 7200
    assert v[("sales_cycle_seconds_p90",)] == 7200
    assert v[("sales_cycle_seconds_avg_by_region", "emea")] == 7200
    assert v[("opportunities_created",)] == 2  # a count of events, as the SPEC defines it


def test_cycle_quantiles_are_exact_per_rep_and_merged_sketches_for_teams():
    ds = [d for d in deals(200, seed=4) if d.outcome == "won"]
    items = sorted((e for d in ds for e in d.events()), key=lambda x: x[0])
    got = scopes(run(items, partitions=3), DAY, T0)
    for rep in REPS:
        cycles = sorted(d.closed - d.created for d in ds if d.rep == rep)
        v = got[("rep", rep)]
        assert v[("sales_cycle_seconds_p50",)] == cycles[int(0.5 * (len(cycles) - 1))]
        assert v[("sales_cycle_seconds_p90",)] == cycles[int(0.9 * (len(cycles) - 1))]
    for team in ("team-a", "team-b"):
        cycles = [d.closed - d.created for d in ds if d.team == team]
        want = Sketch().extend(cycles).quantile(0.9)
        assert got[("team", team)][("sales_cycle_seconds_p90",)] == want
        exact = sorted(cycles)[int(0.9 * (len(cycles) - 1))]
        assert abs(want - exact) <= SKETCH_ACCURACY * exact + 1e-9


def test_deal_size_quantiles_sample_the_won_amount():
    ds = [d for d in deals(200, seed=8) if d.outcome == "won"]
    items = sorted((e for d in ds for e in d.events()), key=lambda x: x[0])
    got = scopes(run(items, partitions=2), DAY, T0)
    amounts = sorted(d.amount for d in ds if d.rep == "rep-2")
    assert got[("rep", "rep-2")][("deal_size_p50",)] == amounts[int(0.5 * (len(amounts) - 1))]
    org = sorted(d.amount for d in ds)
    assert got[("org",)][("deal_size_p90",)] == Sketch().extend(org).quantile(0.9)


def test_open_opportunities_at_window_end_and_pipeline_velocity():
    day_end = CAL.bounds("day", T0)[1]
    items = [
        (T0, OpportunityCreated("a", "rep-1", team_id="team-a")),
        (T0 + 60, OpportunityCreated("b", "rep-1", team_id="team-a")),
        (T0 + 120, OpportunityCreated("c", "rep-1", team_id="team-a")),
        (T0 + 3600, OpportunityWon("a", "rep-1", 3000.0, team_id="team-a")),  # cycle 1 h
        (T0 + 7200, OpportunityLost("b", "rep-1", team_id="team-a")),
        (day_end + 600, OpportunityWon("c", "rep-1", 1000.0, team_id="team-a")),  # next day
    ]
    states = run(items)
    today = scopes(states, DAY, T0)[("rep", "rep-1")]
    assert today[("opportunities_open",)] == 1  # c was open when the day ended
    # velocity = open x win rate x average deal size / cycle in days
    assert today[("pipeline_velocity",)] == pytest.approx(1 * 0.5 * 3000 / (3600 / 86400))
    tomorrow = scopes(states, DAY, day_end)[("rep", "rep-1")]
    assert ("opportunities_open",) not in tomorrow  # nothing open any more
    quarter = scopes(states, QUARTER, T0)[("rep", "rep-1")]
    assert ("opportunities_open",) not in quarter
    assert quarter[("win_ratio",)] == pytest.approx(2 / 3)


def test_a_won_event_before_its_created_event_is_not_open():
    states = run([(T0 + 60, OpportunityWon("a", "rep-1", 10.0, team_id="team-a")),
                  (T0, OpportunityCreated("a", "rep-1", team_id="team-a"))])
    v = scopes(states, DAY, T0)[("rep", "rep-1")]
    assert ("opportunities_open",) not in v
    assert v[("sales_cycle_seconds_avg",)] == 60


def test_calls_per_opportunity():
    items = [(T0 + i, CallCompleted("rep-1", "outbound", "no_answer", team_id="team-a"))
             for i in range(6)]
    items += [(T0 + 10, OpportunityCreated("a", "rep-1", team_id="team-a")),
              (T0 + 11, OpportunityCreated("b", "rep-1", team_id="team-a"))]
    v = scopes(run(items), DAY, T0)
    assert v[("rep", "rep-1")][("calls_per_opportunity",)] == 3
    assert v[("team", "team-a")][("calls_per_opportunity",)] == 3


def test_the_book_survives_a_snapshot_and_restore():
    ds = deals(60, seed=21)
    items = sorted((e for d in ds for e in d.events()), key=lambda x: x[0])
    half = len(items) // 2
    whole = scopes(run(items), DAY, T0)
    events = as_events(items)
    state = PartitionState(CAT, CAL, grace_seconds=86400.0)
    state.apply(Bundle("sales.deals", 0, events[:half]), 0)
    parts = dict(state.snapshot())
    assert any(k.startswith("o/") for k in parts)
    restored = PartitionState.restore(parts.items(), CAT, CAL, grace_seconds=86400.0)
    restored.apply(Bundle("sales.deals", 0, events[:half]), 0)  # replayed: skipped
    restored.apply(Bundle("sales.deals", 0, events[half:]), 1)
    got = scopes([restored], DAY, T0)
    assert set(got) == set(whole)
    for scope, values in whole.items():
        assert got[scope] == pytest.approx(values), scope


def test_a_cut_short_snapshot_replays_into_the_parts_that_lack_the_record():
    """Windows are written before opportunity parts: a crash after the windows leaves
    opportunity parts behind them, and the replay files the cycle once."""
    items = [(T0, OpportunityCreated("a", "rep-1", team_id="team-a")),
             (T0 + 600, OpportunityWon("a", "rep-1", 5.0, team_id="team-a"))]
    events = as_events(items)
    state = PartitionState(CAT, CAL, grace_seconds=86400.0)
    state.apply(Bundle("sales.deals", 0, events[:1]), 0)
    first = dict(state.snapshot())
    state.apply(Bundle("sales.deals", 0, events[1:]), 1)
    second = state.snapshot()
    windows_only = {**first, **{k: v for k, v in second if k.startswith(("w/", "s/"))}}
    restored = PartitionState.restore(windows_only.items(), CAT, CAL, grace_seconds=86400.0)
    restored.apply(Bundle("sales.deals", 0, events[1:]), 1)
    v = scopes([restored], DAY, T0)[("rep", "rep-1")]
    assert v[("sales_cycle_seconds_avg",)] == 600
    assert v[("opportunities_won",)] == 1
    assert v[("sales_cycle_seconds_avg_by_region", "unknown")] == 600


# -- customers and sentiment ---------------------------------------------------------------------


def test_nps_per_team_and_region_enps_never_per_rep_and_cac():
    items = []
    scores = {"team-a": [10, 9, 9, 3, 7], "team-b": [0, 6, 10]}
    region = {"team-a": "emea", "team-b": "amer"}
    for team, ss in scores.items():
        for i, s in enumerate(ss):
            items.append((T0 + i, NpsResponded(s, rep_id="rep-1" if team == "team-a" else "rep-3",
                                               team_id=team, region=region[team])))
            items.append((T0 + i, EnpsResponded(s, team)))
    items += [
        (T0 + 30, SpendRecorded(500.0, "sales", team_id="team-a")),
        (T0 + 31, SpendRecorded(1500.0, "marketing")),
        (T0 + 32, LeadConverted("l1", rep_id="rep-1", team_id="team-a")),
        (T0 + 33, LeadConverted("l2", rep_id="rep-3", team_id="team-b")),
    ]
    got = scopes(run(items, partitions=2), DAY, T0)

    def nps(ss):
        return 100 * (sum(s >= 9 for s in ss) - sum(s <= 6 for s in ss)) / len(ss)

    assert got[("team", "team-a")][("nps",)] == pytest.approx(nps(scores["team-a"]))
    assert got[("team", "team-b")][("enps",)] == pytest.approx(nps(scores["team-b"]))
    both = scores["team-a"] + scores["team-b"]
    assert got[("org",)][("nps",)] == pytest.approx(nps(both))
    assert got[("org",)][("enps",)] == pytest.approx(nps(both))
    assert got[("org",)][("nps_by_region", "emea")] == pytest.approx(nps(scores["team-a"]))
    assert got[("org",)][("customer_acquisition_cost",)] == pytest.approx(2000 / 2)
    assert got[("team", "team-a")][("customer_acquisition_cost",)] == 500
    assert got[("org",)][("spend", "marketing")] == 1500
    # eNPS is anonymous: no rep has any of it
    assert not any(k[0].startswith("enps") for s, v in got.items() if s[0] == "rep" for k in v)
    assert "rep" not in CAT.by_name["enps"].scopes and "rep" not in CAT.by_name["nps"].scopes


# -- the catalog's new aggregations -----------------------------------------------------------------


def test_expression_entries_are_validated():
    base = [KPI(name="a", help="h", aggregation="count", types=("tool.used",)),
            KPI(name="b", help="h", aggregation="count", types=("tool.used",), dimensions=("tool",))]
    ok = Catalog([*base, KPI(name="x", help="h", aggregation="expression", expression="2 * a / (a + 1)")])
    names, fn = ok.expressions["x"]
    assert names == ("a",) and fn({"a": 3.0}.get) == 1.5
    with pytest.raises(CatalogError, match="'x'.*not allowed"):
        Catalog([*base, KPI(name="x", help="h", aggregation="expression", expression="a ** 2")])
    with pytest.raises(CatalogError, match="'x'.*'c' is not a KPI"):
        Catalog([*base, KPI(name="x", help="h", aggregation="expression", expression="a + c")])
    with pytest.raises(CatalogError, match="share dimensions"):
        Catalog([*base, KPI(name="x", help="h", aggregation="expression", expression="a + b")])
    with pytest.raises(CatalogError, match="names no KPI"):
        Catalog([*base, KPI(name="x", help="h", aggregation="expression", expression="1 + 2")])


def test_an_expression_divided_by_zero_is_missing_not_an_error():
    values = finish(CAT, merge([split({("nps_responses", "r", "t"): 0.0,
                                       ("nps_promoters", "r", "t"): 0.0})[2]]))
    assert ("nps",) not in values


def test_sampled_series_are_validated():
    won = ("opportunity.won",)
    with pytest.raises(CatalogError, match="needs fields"):
        Catalog([KPI(name="q", help="h", aggregation="quantile", quantile=0.5, types=won)])
    with pytest.raises(CatalogError, match="sampled differently"):
        Catalog([KPI(name="q", help="h", aggregation="quantile", quantile=0.5, types=won,
                     fields=("amount",), series="s"),
                 KPI(name="m", help="h", aggregation="mean", types=("opportunity.created",),
                     fields=("amount",), series="s")])
    with pytest.raises(CatalogError, match="neither computed .* nor sampled"):
        Catalog([KPI(name="m", help="h", aggregation="mean", series="nothing")])
    with pytest.raises(CatalogError, match="computed by the state"):
        Catalog([KPI(name="m", help="h", aggregation="mean", series="sales_cycle_seconds",
                     types=won, fields=("amount",))])


def test_distinct_counts_merge_exactly_across_partitions():
    cat = Catalog([KPI(name="buyers", help="h", aggregation="distinct", types=("opportunity.won",),
                       fields=("customer_id",))])
    s1 = PartitionState(cat, CAL)
    s2 = PartitionState(cat, CAL)
    s1.apply(Bundle("t", 0, as_events([(T0, OpportunityWon("a", "r1", 1.0, customer_id="c1")),
                                       (T0, OpportunityWon("b", "r1", 1.0, customer_id="c2"))])), 0)
    s2.apply(Bundle("t", 1, as_events([(T0, OpportunityWon("c", "r2", 1.0, customer_id="c2")),
                                       (T0, OpportunityWon("d", "r2", 1.0))])), 0)
    start = CAL.bounds("day", T0)[0]
    orgs = [split(s.window_values(DAY, start))[2] for s in (s1, s2)]
    assert finish(cat, merge(orgs)) == {("buyers",): 2.0}
    with pytest.raises(CatalogError, match="one field"):
        Catalog([KPI(name="x", help="h", aggregation="distinct", types=("opportunity.won",),
                     fields=("customer_id", "region"))])


def test_roster_events_do_not_disturb_the_book():
    items = [(T0, RepUpdated("rep-1", team_id="team-a")),
             (T0 + 1, OpportunityCreated("a", "rep-1"))]
    v = scopes(run(items), DAY, T0)
    assert v[("team", "team-a")][("opportunities_open",)] == 1


def test_sales_metrics_records_carry_a_kpi_only_in_its_scopes():
    import msgspec

    from metrics.snapshots import SnapshotFormat

    fmt = SnapshotFormat(CAT, CAL)
    values = {("enps",): 20.0, ("revenue",): 5.0}
    rep = msgspec.json.decode(fmt.value("rep", "r", "t", DAY, T0, T0 + 1, values, final=False, now=T0))
    team = msgspec.json.decode(fmt.value("team", "t", None, DAY, T0, T0 + 1, values, final=False, now=T0))
    assert rep["kpis"] == {"revenue": 5.0}
    assert team["kpis"] == {"enps": 20.0, "revenue": 5.0}


def test_a_close_republishes_only_the_windows_ending_after_it():
    """The open count at a window's end changes only for windows ending after the close: older
    windows are not published again (by event time they may be closed already)."""
    created = T0 - 100 * 86400  # an earlier quarter
    state = PartitionState(CAT, CAL, grace_seconds=200 * 86400.0)
    events = as_events([(created, OpportunityCreated("a", "rep-1", team_id="team-a")),
                        (T0, OpportunityLost("a", "rep-1", team_id="team-a"))])
    state.apply(Bundle("d", 0, events[:1]), 0)
    assert state.windows  # folds the pending hits (which marks their windows changed)
    state.changed_windows.clear()
    state.apply(Bundle("d", 0, events[1:]), 1)
    assert state.windows
    old_quarter = (QUARTER, CAL.bounds("quarter", created)[0])
    assert old_quarter in state.windows
    assert old_quarter not in state.changed_windows
    assert (QUARTER, CAL.bounds("quarter", T0)[0]) in state.changed_windows


def test_samples_of_events_without_a_team_survive_a_snapshot():
    """Sample keys carry an explicit team: a won deal without team_id (and no roster entry)
    is filed under its rep's team from the roster, here unassigned, and restores."""
    events = as_events([(T0, OpportunityCreated("a", "rep-9")),
                        (T0 + 60, OpportunityWon("a", "rep-9", 10.0))])
    state = PartitionState(CAT, CAL, grace_seconds=86400.0)
    state.apply(Bundle("d", 0, events), 0)
    restored = PartitionState.restore(state.snapshot(), CAT, CAL, grace_seconds=86400.0)
    v = scopes([restored], DAY, T0)[("team", "unassigned")]
    assert v[("sales_cycle_seconds_avg",)] == 60
    assert v[("deal_size_p50",)] == pytest.approx(10, rel=SKETCH_ACCURACY)


def test_the_book_keeps_a_settled_opportunity_while_a_window_that_counts_it_open_may_be_published():
    """An opportunity open at a window's end counts in that window's ``opportunities_open``
    until the window is published for the last time. The book forgets settled opportunities
    a horizon after they settle; it did that while applying events, by the new watermark,
    before the flush expired (and published) the windows that counted them: a window's last
    partial then said nothing was open. (Closing by event time, that last partial also
    reached the roll-up after the watermark that closed the window there: the CRM replay's
    late partials, once a sentinel event moved the watermark a year on.)"""
    grace = 10 * 86400.0
    state = PartitionState(CAT, CAL, grace_seconds=grace, dedup_horizon_seconds=86400.0)
    day_end = CAL.bounds("day", T0)[1]
    later = day_end + 3 * grace  # past the day's expiry and the book's settled horizon
    events = as_events([(T0, OpportunityCreated("a", "rep-1", team_id="team-a")),
                        (day_end + 3600, OpportunityLost("a", "rep-1", team_id="team-a")),
                        (later, OpportunityCreated("b", "rep-1", team_id="team-a"))])
    for i, e in enumerate(events):
        state.apply(Bundle("d", 0, [e]), i)
    day = state.windows[(DAY, CAL.bounds("day", T0)[0])]  # not expired yet: that is the flush's
    assert window_values(state, day)[("opportunities_open", "rep-1", "team-a")] == 1
    state.expire()  # the flush: the day expires, to be published once more
    assert day in state.expired_windows
    assert window_values(state, day)[("opportunities_open", "rep-1", "team-a")] == 1
    state.expired_windows.clear()  # published
    state.apply(Bundle("d", 0, [Event(3, "crm/test", "id-3", later + 7200, OpportunityCreated(
        "c", "rep-1", team_id="team-a"))]), 3)
    assert "a" not in state.opportunities.opportunities  # then forgotten: the book stays small


def test_an_opportunity_open_longer_than_the_horizon_at_a_windows_end_is_not_open_there():
    """The open horizon is measured from the window's end, not from the watermark when the
    window is read: a window's open count is the same whenever it is published, and the book
    forgets an opportunity once no window that may still be published counts it."""
    state = PartitionState(CAT, CAL, grace_seconds=3600.0)
    state.opportunities.open_horizon = 2 * 86400.0
    day0 = CAL.bounds("day", T0)
    events = [Event(0, "crm/test", "c-a", T0, OpportunityCreated("a", "rep-1", team_id="team-a")),
              Event(1, "crm/test", "c-b", T0 + 86400, OpportunityCreated("b", "rep-1", team_id="team-a")),
              Event(2, "crm/test", "c-c", T0 + 5 * 86400, OpportunityCreated("c", "rep-1", team_id="team-a"))]
    state.apply(Bundle("d", 0, events[:2]), 0)
    first = state.windows[(DAY, day0[0])]
    assert window_values(state, first)[("opportunities_open", "rep-1", "team-a")] == 1
    state.apply(Bundle("d", 0, events[2:]), 1)  # the watermark passes a's horizon: not yet expired
    assert window_values(state, first)[("opportunities_open", "rep-1", "team-a")] == 1
    assert "a" in state.opportunities.opportunities
    fifth = state.windows[(DAY, day0[0] + 5 * 86400)]  # a and b are over two days old at its end
    assert window_values(state, fifth)[("opportunities_open", "rep-1", "team-a")] == 1  # c
    state.expire()
    state.expired_windows.clear()  # published
    state.apply(Bundle("d", 0, [Event(3, "crm/test", "c-d", T0 + 5 * 86400 + 7200, OpportunityCreated(
        "d", "rep-1", team_id="team-a"))]), 2)
    assert "a" not in state.opportunities.opportunities


def test_the_sweep_keeps_what_a_window_an_input_still_behind_may_make_counts_open():
    """An input partition behind the others may still make windows that end up to a dedup
    horizon behind the partition's watermark (older events are late). The hourly sweep
    bounded what it forgot by the windows the state held: an open opportunity near the open
    horizon was forgotten, and a day window made afterwards by the input behind said it was
    not open. The sweep now also keeps what a window ending a horizon behind the watermark
    counts open."""
    state = PartitionState(CAT, CAL, grace_seconds=3600.0, dedup_horizon_seconds=86400.0)
    state.opportunities.open_horizon = 2 * 86400.0
    d0 = CAL.bounds("day", T0)[0]
    w1 = d0 + 2.5 * 86400
    w2 = w1 + 7200

    keyed = iter(range(100))  # the keyed-events offsets, in order

    def created(offset: int, t: float, opp: str, partition: int = 0) -> None:
        """An event at ``offset`` of input partition ``partition``."""
        state.apply(Bundle("d", partition, [Event(offset, "crm/test", f"c-{opp}", t, OpportunityCreated(
            opp, "rep-1", team_id="team-a"))]), next(keyed))

    created(0, d0 + 3600, "a")  # open, created an hour into day 0
    created(1, w1, "x")  # the watermark moves two and a half days on
    state.expire()
    state.expired_windows.clear()  # published
    created(2, w2, "z")  # the next hourly sweep
    # an input behind the others: its event is within the dedup horizon, so not late
    t = d0 + 86400 + 20 * 3600
    assert t > state.watermark - 86400.0
    created(0, t, "y", partition=1)
    day1 = state.windows[(DAY, d0 + 86400)]  # it ends at d0 + 2 days: a is open there
    assert window_values(state, day1)[("opportunities_open", "rep-1", "team-a")] == 2  # a and y
    # and the book still forgets a once no window that may be made counts it
    created(3, d0 + 5 * 86400, "later")
    state.expire()
    state.expired_windows.clear()
    created(4, d0 + 5 * 86400 + 7200, "later2")
    assert "a" not in state.opportunities.opportunities

"""Acceptance on real-shaped data: the public CRM sample data set, replayed at its historical
event times, gives per agent, team and region and per quarter the win rate, revenue, deal count,
average deal size and average sales cycle (and per agent and team the open pipeline at the
quarter's end) that a computation straight from the CSV gives.

The data set (8,800 opportunities, 2016-2017) is read at test time from
``../shared/data/crm-sales-opportunities`` (``SALESPULSE_CRM_DATA`` overrides), never copied
into the repository. Its quirks are handled here, on the way in, not by editing the data:
M/D/YYYY dates, the product "GTXPro" spelled apart from "GTX Pro", 1,425 opportunities without
an account (no customer id), open deals without a close date (Engaging: created only) and
Prospecting deals without any date (no event: nothing happened yet by the data's clock).
Agent and manager names never become labels: they are mapped to opaque ids.

The windows of 2016-2017 are long closed by the wall clock, so the worker runs with
``SALESPULSE_WINDOW_CLOCK=event``: windows close by event time, and the final `sales.metrics`
records come once every keyed partition's event time passes a window's end plus two grace
periods. One event per keyed partition after the data's end (in a later quarter) moves event
time on, as new input would.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import json
import os
import statistics
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from zlib import crc32

import pytest
from jsonschema import Draft202012Validator

from tests.integration.harness import (
    REPO,
    Worker,
    cloudevent,
    create_topics,
    eventually,
    produce,
    read_topic,
    topic_set,
    unique,
)

DATA = Path(os.environ.get("SALESPULSE_CRM_DATA", REPO.parent / "shared" / "data" / "crm-sales-opportunities"))
DAY = 86400.0
GRACE = 92 * DAY  # a quarter: far more than the partitions of a replay run apart in event time
PRODUCT_ALIASES = {"GTXPro": "GTX Pro"}
KPIS = ("win_ratio", "revenue", "opportunities_won", "average_deal_size", "sales_cycle_seconds_avg")
CHECKED = (*KPIS, "opportunities_created", "opportunities_open")
OPEN_HORIZON = 365 * DAY  # an opportunity open longer at a window's end is not open there
REGION_KPIS = {
    "win_ratio": "win_ratio_by_region", "revenue": "revenue_by_region",
    "opportunities_won": "deals_won_by_region", "average_deal_size": "average_deal_size_by_region",
    "sales_cycle_seconds_avg": "sales_cycle_seconds_avg_by_region",
}


def opaque(kind: str, name: str) -> str:
    """An id for a person's (or account's) name: labels carry ids, never names."""
    return f"{kind}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"


def day(text: str) -> float:
    """M/D/YYYY, midnight UTC."""
    return datetime.strptime(text, "%m/%d/%Y").replace(tzinfo=UTC).timestamp()


def quarter_of(t: float) -> str:
    d = datetime.fromtimestamp(t, UTC)
    start = datetime(d.year, 3 * ((d.month - 1) // 3) + 1, 1, tzinfo=UTC)
    return start.isoformat().replace("+00:00", "Z")


def load() -> tuple[dict[str, tuple[str, str]], list[dict[str, str]], dict[str, float]]:
    """Roster (agent id -> team id, region), pipeline rows, product prices."""
    with open(DATA / "sales_teams.csv", newline="") as f:
        roster = {
            opaque("agent", r["sales_agent"]): (opaque("team", r["manager"]), r["regional_office"].lower())
            for r in csv.DictReader(f)
        }
    with open(DATA / "products.csv", newline="") as f:
        prices = {r["product"]: float(r["sales_price"]) for r in csv.DictReader(f)}
    with open(DATA / "sales_pipeline.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return roster, rows, prices


def convert(roster: dict[str, tuple[str, str]], rows: list[dict[str, str]],
            prices: dict[str, float], topic: str) -> list[tuple]:
    """The data set as CloudEvents, in event-time order, all to one input partition."""
    events: list[tuple[float, int, str, str, dict]] = []
    first = min(day(r["engage_date"]) for r in rows if r["engage_date"])
    for rep, (team, region) in roster.items():
        events.append((first - DAY, 0, f"roster-{rep}", "rep.updated",
                       {"rep_id": rep, "team_id": team, "region": region}))
    for r in rows:
        if not r["engage_date"]:
            continue  # Prospecting: not engaged yet, no date to put an event at
        rep = opaque("agent", r["sales_agent"])
        region = roster[rep][1]
        opp = r["opportunity_id"]
        product = PRODUCT_ALIASES.get(r["product"], r["product"])
        created = {"opportunity_id": opp, "rep_id": rep, "region": region, "amount": prices[product]}
        if r["account"]:
            created["customer_id"] = opaque("account", r["account"])
        events.append((day(r["engage_date"]), 1, f"{opp}-created", "opportunity.created", created))
        if r["deal_stage"] == "Won":
            won = {"opportunity_id": opp, "rep_id": rep, "region": region,
                   "amount": float(r["close_value"])}
            if r["account"]:
                won["customer_id"] = opaque("account", r["account"])
            events.append((day(r["close_date"]), 2, f"{opp}-won", "opportunity.won", won))
        elif r["deal_stage"] == "Lost":
            events.append((day(r["close_date"]), 2, f"{opp}-lost", "opportunity.lost",
                           {"opportunity_id": opp, "rep_id": rep, "region": region}))
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    return [(topic, None, cloudevent(etype, data, t=t, eid=eid, source="crm/maven"), [], 0)
            for t, _, eid, etype, data in events]


def expected(roster: dict[str, tuple[str, str]], rows: list[dict[str, str]]) -> dict[tuple, dict[str, float]]:
    """Straight from the CSV: (scope, id, quarter) -> KPI -> value; region under ("region", r)."""
    closes: dict[tuple, list[tuple[bool, float, float]]] = defaultdict(list)
    created: dict[tuple, int] = defaultdict(int)
    for r in rows:
        agent = opaque("agent", r["sales_agent"])
        team, region = roster[agent]
        if r["engage_date"]:
            for scope in (("rep", agent), ("team", team), ("org", "org")):
                created[(*scope, quarter_of(day(r["engage_date"])))] += 1
        if r["deal_stage"] not in ("Won", "Lost"):
            continue
        q = quarter_of(day(r["close_date"]))
        deal = (r["deal_stage"] == "Won", float(r["close_value"] or 0),
                day(r["close_date"]) - day(r["engage_date"]))
        for scope in (("rep", agent), ("team", team), ("region", region), ("org", "org")):
            closes[(*scope, q)].append(deal)
    out = {}
    for key, deals in closes.items():
        won = [d for d in deals if d[0]]
        v = {"win_ratio": len(won) / len(deals)}
        if won:
            revenue = sum(d[1] for d in won)
            v.update(revenue=revenue, opportunities_won=float(len(won)),
                     average_deal_size=revenue / len(won),
                     sales_cycle_seconds_avg=statistics.fmean(d[2] for d in won))
        out[key] = v
    for key, n in created.items():
        out.setdefault(key, {})["opportunities_created"] = float(n)
    # the pipeline at each quarter's end: engaged before it (within the horizon), not closed then
    opened: dict[tuple, int] = defaultdict(int)
    ends = {q: quarter_end(q) for q in {k[2] for k in out}}
    for r in rows:
        if not r["engage_date"]:
            continue
        agent = opaque("agent", r["sales_agent"])
        engaged, closed = day(r["engage_date"]), day(r["close_date"]) if r["close_date"] else None
        for q, end in ends.items():
            if end - OPEN_HORIZON <= engaged < end and (closed is None or closed >= end):
                for scope in (("rep", agent), ("team", roster[agent][0]), ("org", "org")):
                    opened[(*scope, q)] += 1
    for key, v in out.items():
        if opened.get(key) and key[0] != "region":
            v["opportunities_open"] = float(opened[key])
    return out


def quarter_end(quarter: str) -> float:
    d = datetime.fromisoformat(quarter.replace("Z", "+00:00"))
    d = d.replace(year=d.year + 1, month=1) if d.month == 10 else d.replace(month=d.month + 3)
    return d.timestamp()


SCHEMA = Draft202012Validator(json.loads((REPO / "docs" / "schema" / "sales-metrics.v1.json").read_text()))


def finals(bootstrap: str, topic: str) -> dict[str, dict]:
    latest: dict[str, dict] = {}
    for rec in asyncio.run(read_topic(bootstrap, topic)):  # in offset order per partition
        latest[rec.key.decode()] = json.loads(rec.value)
    for key, record in latest.items():  # the records keep the published schema
        if record["window"] not in ("minute", "hour"):  # (the bulk; same code path)
            assert not [e.message for e in SCHEMA.iter_errors(record)], key
    return {k: v for k, v in latest.items() if v["final"] and v["window"] == "quarter"}


def test_crm_data_set_replayed_gives_the_csv_figures_per_agent_team_region_and_quarter(
    bootstrap: str, log_dir: Path,
) -> None:
    roster, rows, prices = load()
    assert len(rows) == 8800 and len(roster) == 35
    assert "GTXPro" in {r["product"] for r in rows}  # the quirk is really there, and handled
    topics = topic_set(unique("crm"))
    asyncio.run(create_topics(bootstrap, [t for k, t in topics.items() if k != "metrics"]))
    records = convert(roster, rows, prices, topics["deals"])
    want = expected(roster, rows)
    last_close = max(day(r["close_date"]) for r in rows if r["close_date"])
    quarters = sorted({k[2] for k in want})
    assert quarters == ["2016-10-01T00:00:00Z", "2017-01-01T00:00:00Z", "2017-04-01T00:00:00Z",
                        "2017-07-01T00:00:00Z", "2017-10-01T00:00:00Z"]  # engaged from 2016-10

    worker = Worker(bootstrap, unique("crm"), topics, log_dir,
                    SALESPULSE_WINDOW_CLOCK="event", SALESPULSE_GRACE_SECONDS=str(GRACE),
                    SALESPULSE_METRICS_INTERVAL_SECONDS="0.5")
    worker.start()
    try:
        # after the data, one event in every keyed partition moves event time past the last
        # quarter's closing (windows close when every partition with events has read past them)
        later = last_close + 2 * GRACE + 2 * DAY
        sentinels = [(topics["deals"], None, cloudevent(
            "opportunity.created", {"opportunity_id": f"sentinel-{rep}", "rep_id": rep},
            t=later, eid=f"sentinel-{rep}", source="test/sentinel"), [], 0)
            for rep in _one_rep_per_partition()]
        asyncio.run(produce(bootstrap, records + sentinels))

        wanted_keys = {_key(k) for k in want if k[0] != "region"}

        def all_final() -> dict[str, dict]:
            got = finals(bootstrap, topics["metrics"])
            missing = wanted_keys - set(got)
            assert not missing, f"{len(missing)} final records missing, e.g. {sorted(missing)[:3]}"
            return got

        got = eventually(all_final, timeout=120, every=2.0)
        assert worker.health()["rollup"]["late_partials"] == 0
    finally:
        worker.stop()

    checked = 0
    for key, values in want.items():
        scope, ident, quarter = key
        if scope == "region":
            kpis = got[_key(("org", "org", quarter))]["kpis"]
            mine = {k: kpis.get(REGION_KPIS[k], {}).get(ident) for k in KPIS}
        else:
            record = got[_key(key)]
            if scope == "rep":
                assert record["team"] == roster[ident][0]
            mine = {k: record["kpis"].get(k) for k in CHECKED}
        for kpi in mine:
            if kpi in values:
                assert mine[kpi] == pytest.approx(values[kpi], rel=1e-9), (key, kpi)
                checked += 1
            else:
                assert mine[kpi] is None, (key, kpi, mine[kpi])
    # 30 agents with deals, 6 teams (managers), 3 regions and the org, over 5 quarters
    assert {k[0] for k in want} == {"rep", "team", "region", "org"}
    assert len({k[1] for k in want if k[0] == "rep"}) == 30
    assert checked > 800


def _key(key: tuple) -> str:
    scope, ident, quarter = key
    return f"{scope}/{ident}/quarter/{quarter}"



def _one_rep_per_partition(partitions: int = 4) -> list[str]:
    """Rep ids routed to each keyed-events partition (the ingest stage routes by crc32 of the
    rep id)."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions:
        rep = f"rep-sentinel-{i}"
        found.setdefault(crc32(rep.encode()) % partitions, rep)
        i += 1
    return list(found.values())

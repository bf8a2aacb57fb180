"""Pipeline, revenue, customer and sentiment KPIs and targets on a live worker's /metrics.

Opportunities, surveys, spend and a roster with targets are produced (shuffled, some twice),
and the values on /metrics are checked against figures computed here from what was produced:
per rep, team and organisation, by SPEC section 3's naming scheme.
"""

from __future__ import annotations

import asyncio
import random
import statistics
from pathlib import Path

import pytest

from tests.integration import harness as h
from tests.integration.oracle import recent_today

pytestmark = pytest.mark.integration

REPS = {"rep-a1": ("team-a", "emea"), "rep-a2": ("team-a", "emea"), "rep-b1": ("team-b", "amer")}


def test_pipeline_revenue_sentiment_and_targets_on_metrics(bootstrap: str, log_dir: Path) -> None:
    topics = h.topic_set(h.unique("pipe"))
    asyncio.run(h.create_topics(bootstrap, [t for k, t in topics.items() if k != "metrics"]))
    earliest, now = recent_today(200)
    rng = random.Random(7)
    records: list[tuple] = []

    def send(topic: str, etype: str, data: dict, t: float) -> None:
        records.append((topics[topic], None, h.cloudevent(etype, data, t=t), []))

    for rep, (team, region) in REPS.items():
        send("reps", "rep.updated", {"rep_id": rep, "team_id": team, "region": region,
                                     "targets": {"revenue": {"day": 10_000}}}, earliest)
    deals = []
    for i in range(40):
        rep = rng.choice(sorted(REPS))
        team, region = REPS[rep]
        created = round(rng.uniform(earliest, now - 60), 3)  # event times carry milliseconds
        closed = round(rng.uniform(created + 1, now), 3)
        outcome = rng.choice(["won", "won", "lost", "open"])
        amount = float(rng.randint(1, 50) * 100)
        deals.append((rep, team, region, created, closed, outcome, amount))
        opp = f"opp-{i}"
        send("deals", "opportunity.created", {"opportunity_id": opp, "rep_id": rep, "region": region,
                                              "amount": amount}, created)
        if outcome == "won":  # no team_id: the roster's
            send("deals", "opportunity.won", {"opportunity_id": opp, "rep_id": rep, "amount": amount,
                                              "region": region, "customer_id": f"c-{i % 7}"}, closed)
        elif outcome == "lost":
            send("deals", "opportunity.lost", {"opportunity_id": opp, "rep_id": rep, "region": region,
                                               "reason": "price"}, closed)
    scores = {"team-a": [10, 9, 3, 8], "team-b": [0, 10, 10]}
    for team, ss in scores.items():
        for s in ss:
            send("feedback", "nps.responded", {"score": s, "team_id": team}, rng.uniform(earliest, now))
            send("feedback", "enps.responded", {"score": s, "team_id": team}, rng.uniform(earliest, now))
    send("deals", "spend.recorded", {"amount": 900.0, "category": "marketing"}, now - 5)
    send("leads", "lead.converted", {"lead_id": "l1", "rep_id": "rep-a1", "team_id": "team-a"}, now - 4)
    send("leads", "lead.converted", {"lead_id": "l2", "rep_id": "rep-b1", "team_id": "team-b"}, now - 3)
    stream = records + rng.sample(records, 20)
    rng.shuffle(stream)

    worker = h.Worker(bootstrap, h.unique("app"), topics, log_dir)
    worker.start()
    try:
        asyncio.run(h.produce(bootstrap, stream))
        won = [d for d in deals if d[5] == "won"]
        closed = [d for d in deals if d[5] in ("won", "lost")]

        def check(s) -> None:
            def get(name: str, **labels: str) -> float | None:
                return h.value(s, name, window="day", **labels)

            for rep, (team, _) in REPS.items():
                mine = [d for d in won if d[0] == rep]
                revenue = sum(d[6] for d in mine)
                assert get("salespulse_rep_revenue", rep=rep, team=team) == revenue
                assert get("salespulse_rep_revenue_attainment_ratio", rep=rep, team=team) == \
                    pytest.approx(revenue / 10_000)
                assert get("salespulse_rep_sales_cycle_seconds_avg", rep=rep, team=team) == \
                    pytest.approx(statistics.fmean(d[4] - d[3] for d in mine), rel=1e-6)
            for team in ("team-a", "team-b"):
                t_won = [d for d in won if d[1] == team]
                t_closed = [d for d in closed if d[1] == team]
                assert get("salespulse_team_win_ratio", team=team) == pytest.approx(len(t_won) / len(t_closed))
                members = sum(1 for r in REPS.values() if r[0] == team)
                assert get("salespulse_team_revenue_attainment_ratio", team=team) == pytest.approx(
                    sum(d[6] for d in t_won) / (10_000 * members))
                ss = scores[team]
                nps = 100 * (sum(x >= 9 for x in ss) - sum(x <= 6 for x in ss)) / len(ss)
                assert get("salespulse_team_nps", team=team) == pytest.approx(nps)
                assert get("salespulse_team_enps", team=team) == pytest.approx(nps)
            assert get("salespulse_org_average_deal_size") == pytest.approx(
                sum(d[6] for d in won) / len(won))
            assert get("salespulse_org_opportunities_open") == sum(1 for d in deals if d[5] == "open")
            assert get("salespulse_org_revenue_by_region", region="emea") == sum(
                d[6] for d in won if d[2] == "emea")
            assert get("salespulse_org_customers_won") == len({f"c-{i % 7}" for i, d in enumerate(deals)
                                                               if d[5] == "won"})
            assert get("salespulse_org_customer_acquisition_cost") == pytest.approx(900 / 2)
            assert get("salespulse_org_pipeline_velocity") is not None
            # eNPS is anonymous: its rep family has no series at all
            assert not [k for k in s if k[0] == "salespulse_rep_enps"]

        worker.until(check, timeout=60)
        text = worker.metrics_text()
        assert "# TYPE salespulse_rep_enps" not in text  # no rep family declared either
    finally:
        worker.stop()

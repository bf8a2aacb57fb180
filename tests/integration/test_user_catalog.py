"""A user catalog file on a real worker: the README's competitor pricing example, end to end.

The worker loads `SALESPULSE_CATALOG_FILE` (a declared event type and last / min KPIs over it),
validates the declared type's events (a bad one goes to the dead-letter topic with its reason)
and exports the latest observed price per competitor and product on /metrics, by event time
whatever the arrival order.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.integration.harness import (
    Worker,
    cloudevent,
    create_topics,
    produce,
    read_topic,
    topic_set,
    unique,
    value,
)

CATALOG = """\
event_types:
  competitor.price_observed:
    competitor: {type: string, required: true}
    product: {type: string, required: true}
    price: {type: number, minimum: 0, required: true}
    rep_id: string
    team_id: string
kpis:
  - name: competitor_price
    help: Latest observed price per competitor and product.
    aggregation: last
    types: [competitor.price_observed]
    fields: [price]
    dimensions: [competitor, product]
    max_values: 50
    windows: [day, week, month]
  - name: competitor_price_min
    help: Lowest observed price per competitor and product.
    aggregation: min
    types: [competitor.price_observed]
    fields: [price]
    dimensions: [competitor, product]
    windows: [day, week, month]
"""


def test_competitor_pricing_from_a_user_catalog(bootstrap: str, log_dir: Path) -> None:
    path = log_dir / "kpis.yml"
    path.write_text(CATALOG)
    topics = topic_set(unique("user"))
    asyncio.run(create_topics(bootstrap, [t for k, t in topics.items() if k != "metrics"]))
    now = time.time() - 60
    obs = [(now + 30, "acme", "pro", 99.0, "ann"), (now + 10, "acme", "pro", 120.0, "bob"),
           (now + 20, "acme", "pro", 150.0, None), (now + 5, "globex", "pro", 80.0, "bob")]
    records = [
        (topics["activities"], None, cloudevent("competitor.price_observed", {
            "competitor": c, "product": p, "price": x, **({"rep_id": r, "team_id": "east"} if r else {})},
            t=t), [])
        for t, c, p, x, r in obs
    ]
    records.append((topics["activities"], b"bad", cloudevent(
        "competitor.price_observed", {"competitor": "acme", "product": "pro", "price": -3}, t=now), []))
    worker = Worker(bootstrap, unique("user"), topics, log_dir, SALESPULSE_CATALOG_FILE=str(path))
    worker.start()
    try:
        asyncio.run(produce(bootstrap, records))

        def check(s):
            def price(kpi: str, scope: str, **labels: str) -> float | None:
                return value(s, f"salespulse_{scope}_{kpi}", window="day", **labels)
            assert price("competitor_price", "org", competitor="acme", product="pro") == 99.0
            assert price("competitor_price", "org", competitor="globex", product="pro") == 80.0
            assert price("competitor_price_min", "org", competitor="acme", product="pro") == 99.0
            assert price("competitor_price", "team", team="east", competitor="acme", product="pro") == 99.0
            assert price("competitor_price", "rep", rep="bob", team="east", competitor="acme",
                         product="pro") == 120.0
            assert value(s, "salespulse_events_processed_total", type="competitor.price_observed") == 4
            assert value(s, "salespulse_events_rejected_total", reason="out_of_range") == 1

        worker.until(check, timeout=60)
        (dead,) = asyncio.run(read_topic(bootstrap, topics["dlq"], expect=1))
        headers = dict(dead.headers)
        assert headers["salespulse.errors.reason"] == b"out_of_range"
        assert b"price" in headers["salespulse.errors.message"]
    finally:
        worker.stop()

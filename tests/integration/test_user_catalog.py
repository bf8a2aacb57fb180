"""A user catalog file on a real worker: the README's competitor pricing example, end to end.

The worker loads `SALESPULSE_CATALOG_FILE` (docs/examples/competitor-pricing.yml: a declared
event type and last / min / max KPIs over it), validates the declared type's events (a bad one
goes to the dead-letter topic with its reason) and exports the latest observed price per competitor and product on /metrics, by event time
whatever the arrival order.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.integration import harness as h


def test_competitor_pricing_from_a_user_catalog(bootstrap: str, log_dir: Path) -> None:
    path = h.REPO / "docs" / "examples" / "competitor-pricing.yml"
    topics = h.topic_set(h.unique("user"))
    asyncio.run(h.create_topics(bootstrap, [t for k, t in topics.items() if k != "metrics"]))
    now = time.time() - 60
    obs = [(now + 30, "acme", "pro", 99.0, "ann"), (now + 10, "acme", "pro", 120.0, "bob"),
           (now + 20, "acme", "pro", 150.0, None), (now + 5, "globex", "pro", 80.0, "bob")]
    records = [
        (topics["activities"], None, h.cloudevent("competitor.price_observed", {
            "competitor": c, "product": p, "price": x, **({"rep_id": r, "team_id": "east"} if r else {})},
            t=t), [])
        for t, c, p, x, r in obs
    ]
    records.append((topics["activities"], b"bad", h.cloudevent(
        "competitor.price_observed", {"competitor": "acme", "product": "pro", "price": -3}, t=now), []))
    worker = h.Worker(bootstrap, h.unique("user"), topics, log_dir, SALESPULSE_CATALOG_FILE=str(path))
    worker.start()
    try:
        asyncio.run(h.produce(bootstrap, records))

        def check(s):
            def price(kpi: str, scope: str, **labels: str) -> float | None:
                return h.value(s, f"salespulse_{scope}_{kpi}", window="day", **labels)
            assert price("competitor_price", "org", competitor="acme", product="pro") == 99.0
            assert price("competitor_price", "org", competitor="globex", product="pro") == 80.0
            assert price("competitor_price_min", "org", competitor="acme", product="pro") == 99.0
            assert price("competitor_price", "team", team="east", competitor="acme", product="pro") == 99.0
            assert price("competitor_price", "rep", rep="bob", team="east", competitor="acme",
                         product="pro") == 120.0
            assert h.value(s, "salespulse_events_processed_total", type="competitor.price_observed") == 4
            assert h.value(s, "salespulse_events_rejected_total", reason="out_of_range") == 1

        worker.until(check, timeout=60)
        (dead,) = asyncio.run(h.read_topic(bootstrap, topics["dlq"], expect=1))
        headers = dict(dead.headers)
        assert headers["salespulse.errors.reason"] == b"out_of_range"
        assert b"price" in headers["salespulse.errors.message"]
    finally:
        worker.stop()

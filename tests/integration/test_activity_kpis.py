"""Activity KPIs end to end: events produced to Kafka, exact values read from /metrics.

Expected values come from an oracle that counts the produced events directly (a few lines per
KPI, written from SPEC section 1), not from the service's own code.
"""

from __future__ import annotations

import asyncio
import random
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from metrics.windows import Calendar
from tests.integration.harness import (
    Worker,
    cloudevent,
    create_topics,
    produce,
    topic_set,
    unique,
    value,
)
from tests.integration.oracle import ROSTER_ONLY_REP, TEAMS, Oracle, assert_matches, make_activity

pytestmark = pytest.mark.integration

def test_activity_kpis_exact_with_duplicates_and_out_of_order(bootstrap: str, log_dir: Path) -> None:
    prefix = unique("kpi")
    topics = topic_set(prefix)
    asyncio.run(create_topics(bootstrap, topics.values()))
    worker = Worker(bootstrap, unique("app"), topics, log_dir).start()
    try:
        now = time.time()
        day_start, _ = Calendar("UTC").bounds("day", now)
        earliest = max(day_start + 1, now - 240)
        rng = random.Random(42)

        oracle = Oracle()
        records = []
        for _ in range(3000):
            etype, data = make_activity(rng, 0)
            t = rng.uniform(earliest, now)
            oracle.add(etype, data)
            records.append((topics["activities"], None, cloudevent(etype, data, t=t), []))
        duplicates = rng.sample(records, 450)  # producer retries: same bytes, any partition
        stream = records + duplicates
        rng.shuffle(stream)  # out-of-order arrival within the grace period
        asyncio.run(produce(bootstrap, stream))
        # The roster-only rep's team arrives after its activities: attribution must not care.
        roster = cloudevent("rep.updated", {"rep_id": ROSTER_ONLY_REP, "team_id": TEAMS[ROSTER_ONLY_REP]},
                            t=earliest)
        asyncio.run(produce(bootstrap, [(topics["reps"], None, roster, [])]))

        samples = worker.wait_for(
            lambda s: sum(v for (n, _), v in s.items() if n == "salespulse_events_processed_total")
            == len(records) + 1
            and value(s, "salespulse_events_duplicate_total") == len(duplicates),
            what="all events applied, duplicates recognised",
        )
        assert value(samples, "salespulse_events_duplicate_total") == len(duplicates)

        checked = worker.until(lambda s: assert_matches(s, oracle))
        samples = worker.metrics()
        assert checked > 100
        # The roster-only rep is attributed to its roster team, not "unassigned".
        assert value(samples, "salespulse_rep_calls_made", rep=ROSTER_ONLY_REP,
                     team=TEAMS[ROSTER_ONLY_REP], window="day") is not None
        assert not any(
            dict(labels).get("team") == "unassigned" for (_, labels) in samples
        )
        # The web port serves /metrics and /healthz, not Faust's router or table pages.
        for page in ("/router/", "/table/", "/graph/", "/stats/"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"http://127.0.0.1:{worker.port}{page}", timeout=5)
            assert err.value.code == 404, page
        # The output rounds that carried them are on /metrics: each kind ran and took loop
        # time, and the sinks' rounds read windows (the sales.metrics sink's next round, up to
        # its 1 s interval after the values showed, may still be due: waited for).
        kinds = ("rollup_partials", "state_snapshot", "sales_metrics", "redis")
        rounds = worker.wait_for(
            lambda s: all((value(s, "salespulse_output_round_seconds_total", round=k) or 0) > 0
                          for k in kinds)
            and all((value(s, "salespulse_output_round_units_total", round=k) or 0) > 0
                    for k in ("sales_metrics", "redis")),
            timeout=30, what="every kind of output round ran, the sinks' with windows",
        )
        for kind in kinds:
            assert value(rounds, "salespulse_output_rounds_total", round=kind) >= 1, kind
            # a pace for each (0 for a round whose own timer alone paces it)
            assert value(rounds, "salespulse_output_round_pace_seconds", round=kind) >= 0, kind
        # the roll-up partials' interval at least (SALESPULSE_ROLLUP_INTERVAL_SECONDS)
        assert value(rounds, "salespulse_output_round_pace_seconds", round="rollup_partials") >= 0.1
        # All events lie in the current day, hence also in the current week, month and quarter.
        for window in ("week", "month", "quarter"):
            assert value(samples, "salespulse_org_calls_made", window=window) == oracle.v[("org", "calls_made")]
    finally:
        worker.stop()

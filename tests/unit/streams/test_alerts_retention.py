"""The alerts topic is the alert ledger: its retention must outlast every alert a waiting lead
could still be due (the lead wait horizon plus a day)."""

from __future__ import annotations

from streams.app import (
    ALERTS_RETENTION_MARGIN_SECONDS,
    alerts_retention_ms,
    alerts_retention_problem,
)
from streams.settings import Settings

DAY_MS = 86_400_000


def test_the_alerts_topic_keeps_alerts_the_wait_horizon_plus_a_day():
    assert ALERTS_RETENTION_MARGIN_SECONDS == 86400.0
    assert alerts_retention_ms(Settings()) == 31 * DAY_MS
    assert alerts_retention_ms(Settings(lead_wait_horizon_seconds=60)) == DAY_MS + 60_000


def test_an_existing_topic_that_forgets_alerts_too_soon_is_reported():
    wanted = 31 * DAY_MS
    kafka_default = {"cleanup.policy": "delete", "retention.ms": str(7 * DAY_MS), "retention.bytes": "-1"}
    assert "retention.ms=604800000 is shorter than 2678400000" in alerts_retention_problem(kafka_default, wanted)
    assert alerts_retention_problem({**kafka_default, "retention.ms": str(wanted)}, wanted) is None
    assert alerts_retention_problem({**kafka_default, "retention.ms": "-1"}, wanted) is None  # forever
    by_size = {**kafka_default, "retention.ms": "-1", "retention.bytes": "1073741824"}
    assert "retention.bytes=1073741824" in alerts_retention_problem(by_size, wanted)
    # compacted only: the latest alert of every lead (its key) is kept for good
    assert alerts_retention_problem({**kafka_default, "cleanup.policy": "compact"}, wanted) is None
    assert alerts_retention_problem({**kafka_default, "cleanup.policy": "compact,delete"}, wanted)

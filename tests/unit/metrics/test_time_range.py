"""Every event time the validator accepts is safe downstream (issue: one record with the time
``0001-01-01T00:00:00+14:00`` passed validation and then crashed the worker in the windows).

Property test over the whole range RFC 3339 can write (years 0001–9999, offsets ±23:59): each
time is validated; an accepted one goes through windows in several time zones, the apply path
(KPI and lead lanes), fold, snapshot, restore and expiry without an error.
"""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta, timezone

import pytest

from metrics.catalog import Catalog
from metrics.events import Bundle, RejectedEvent, Validator
from metrics.rollup import rollup
from metrics.state import PartitionState
from metrics.windows import WINDOW_KINDS, Calendar

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC).timestamp()
CAT = Catalog()
ZONES = ("UTC", "Pacific/Kiritimati", "America/New_York", "Australia/Lord_Howe")


def random_time(rng: random.Random) -> str:
    year = rng.choice([1, 2, 1969, 1970, 9999, rng.randint(1, 9999), rng.randint(1960, 2030)])
    base = datetime(year, rng.randint(1, 12), rng.randint(1, 28), rng.randint(0, 23),
                    rng.randint(0, 59), rng.randint(0, 59))
    minutes = rng.choice([0, 14 * 60, -12 * 60, 23 * 60 + 59, -(23 * 60 + 59), rng.randint(-1439, 1439)])
    offset = timezone(timedelta(minutes=minutes))
    return base.replace(tzinfo=offset).isoformat()


def record(etype: str, data: dict, when: str, i: int) -> bytes:
    return json.dumps({"specversion": "1.0", "id": f"e{i}", "source": "prop", "type": etype,
                       "time": when, "data": data}).encode()


@pytest.mark.parametrize("seed", range(40))
def test_every_accepted_time_is_safe_through_windows_state_snapshot_and_restore(seed: int) -> None:
    rng = random.Random(seed)
    validator = Validator()
    accepted = []
    for i in range(60):
        when = random_time(rng)
        for etype, data in (
            ("lead.created", {"lead_id": f"lead-{i}", "rep_id": "r1", "team_id": "t"}),
            ("call.completed", {"rep_id": "r1", "lead_id": f"lead-{i}", "direction": "outbound",
                                "outcome": "connected", "talk_seconds": 5}),
        ):
            try:
                accepted.append(validator.decode(record(etype, data, when, 2 * i + len(accepted)), i, NOW))
            except RejectedEvent as exc:
                assert exc.reason in ("out_of_range", "future_time"), (when, exc)
    assert all(0.0 <= e.time <= NOW + 300 for e in accepted)
    for zone in ZONES:
        cal = Calendar(zone)
        state = PartitionState(CAT, cal, grace_seconds=300.0)
        for lane in (0, 1):
            for n, ev in enumerate(accepted):
                for kind in WINDOW_KINDS:
                    start, end = cal.bounds(kind, ev.time)
                    assert start <= ev.time < end
                state.apply(Bundle("sales.activities", 0, [ev], lane), 2 * n + lane)
        parts = state.snapshot()
        state.expire(NOW)
        restored = PartitionState.restore(
            [(k, v) for k, v in parts if v is not None], CAT, cal, grace_seconds=300.0)
        for (kind, start), _ in restored.windows.items():
            rollup(CAT, [restored.window_values(kind, start)],
                   samples=[restored.window_samples(kind, start)], team_of=restored.team_of)
        restored.expire(NOW)

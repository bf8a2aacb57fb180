"""Calendar-aligned windows (SPEC section 4). Expected instants are written as UTC wall times
taken from the published 2026 DST rules (EU: last Sunday of March / October at 01:00 UTC; US:
second Sunday of March / first Sunday of November at 02:00 local)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from metrics.windows import KIND_INDEX, WINDOW_KINDS, Calendar

H = 3600.0
DAY = 24 * H


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_window_kinds():
    assert WINDOW_KINDS == ("minute", "hour", "day", "week", "month", "quarter")
    assert [KIND_INDEX[k] for k in WINDOW_KINDS] == list(range(6))


def test_unknown_kind():
    with pytest.raises(ValueError):
        Calendar().bounds("fortnight", 0.0)


# -- UTC -------------------------------------------------------------------------------------

T = utc(2026, 11, 22, 14, 3, 11) + 0.25  # a Sunday


@pytest.mark.parametrize(
    ("kind", "start", "end"),
    [
        ("minute", utc(2026, 11, 22, 14, 3), utc(2026, 11, 22, 14, 4)),
        ("hour", utc(2026, 11, 22, 14), utc(2026, 11, 22, 15)),
        ("day", utc(2026, 11, 22), utc(2026, 11, 23)),
        ("week", utc(2026, 11, 16), utc(2026, 11, 23)),  # Monday 16th .. Monday 23rd
        ("month", utc(2026, 11, 1), utc(2026, 12, 1)),
        ("quarter", utc(2026, 10, 1), utc(2027, 1, 1)),
    ],
)
def test_utc_bounds(kind, start, end):
    assert Calendar("UTC").bounds(kind, T) == (start, end)


def test_boundaries_belong_to_the_window_they_start():
    cal = Calendar("UTC")
    assert cal.bounds("day", utc(2026, 11, 23)) == (utc(2026, 11, 23), utc(2026, 11, 24))
    assert cal.bounds("day", utc(2026, 11, 23) - 0.001) == (utc(2026, 11, 22), utc(2026, 11, 23))
    assert cal.bounds("minute", utc(2026, 1, 1)) == (utc(2026, 1, 1), utc(2026, 1, 1, 0, 1))
    # Monday 00:00 starts a new week
    assert cal.bounds("week", utc(2026, 11, 23)) == (utc(2026, 11, 23), utc(2026, 11, 30))


@pytest.mark.parametrize(
    ("month", "q_start", "q_end"),
    [
        (1, (2026, 1, 1), (2026, 4, 1)),
        (3, (2026, 1, 1), (2026, 4, 1)),
        (4, (2026, 4, 1), (2026, 7, 1)),
        (6, (2026, 4, 1), (2026, 7, 1)),
        (7, (2026, 7, 1), (2026, 10, 1)),
        (9, (2026, 7, 1), (2026, 10, 1)),
        (10, (2026, 10, 1), (2027, 1, 1)),
        (12, (2026, 10, 1), (2027, 1, 1)),
    ],
)
def test_quarters(month, q_start, q_end):
    cal = Calendar("UTC")
    assert cal.bounds("quarter", utc(2026, month, 15, 12)) == (utc(*q_start), utc(*q_end))


def test_december_month_and_new_year_week():
    cal = Calendar("UTC")
    assert cal.bounds("month", utc(2026, 12, 31, 23, 59)) == (utc(2026, 12, 1), utc(2027, 1, 1))
    # Thursday 2027-01-01 is in the ISO week that started on Monday 2026-12-28
    assert cal.bounds("week", utc(2027, 1, 1, 12)) == (utc(2026, 12, 28), utc(2027, 1, 4))
    # February of a leap year
    assert cal.bounds("month", utc(2028, 2, 29, 12)) == (utc(2028, 2, 1), utc(2028, 3, 1))


# -- Europe/Berlin ---------------------------------------------------------------------------


def test_berlin_winter_and_summer_days():
    cal = Calendar("Europe/Berlin")
    # winter (CET, +01:00): local midnight is 23:00 UTC the day before
    assert cal.bounds("day", utc(2026, 1, 15, 12)) == (utc(2026, 1, 14, 23), utc(2026, 1, 15, 23))
    # 23:30 UTC on Jan 15 is already Jan 16 in Berlin
    assert cal.bounds("day", utc(2026, 1, 15, 23, 30)) == (utc(2026, 1, 15, 23), utc(2026, 1, 16, 23))
    # summer (CEST, +02:00)
    assert cal.bounds("day", utc(2026, 7, 15, 12)) == (utc(2026, 7, 14, 22), utc(2026, 7, 15, 22))
    assert cal.bounds("hour", utc(2026, 7, 15, 12, 59)) == (utc(2026, 7, 15, 12), utc(2026, 7, 15, 13))
    assert cal.bounds("minute", utc(2026, 7, 15, 12, 59, 30)) == (
        utc(2026, 7, 15, 12, 59),
        utc(2026, 7, 15, 13),
    )


def test_berlin_spring_forward_day_is_23_hours():
    cal = Calendar("Europe/Berlin")
    start, end = cal.bounds("day", utc(2026, 3, 29, 12))
    assert (start, end) == (utc(2026, 3, 28, 23), utc(2026, 3, 29, 22))
    assert end - start == 23 * H


def test_berlin_fall_back_day_is_25_hours():
    cal = Calendar("Europe/Berlin")
    start, end = cal.bounds("day", utc(2026, 10, 25, 12))
    assert (start, end) == (utc(2026, 10, 24, 22), utc(2026, 10, 25, 23))
    assert end - start == 25 * H


def test_berlin_hours_across_spring_forward():
    cal = Calendar("Europe/Berlin")
    # 01:00 UTC is 02:00 CET -> 03:00 CEST: local 01:00-02:00 CET then 03:00-04:00 CEST
    assert cal.bounds("hour", utc(2026, 3, 29, 0, 30)) == (utc(2026, 3, 29, 0), utc(2026, 3, 29, 1))
    assert cal.bounds("hour", utc(2026, 3, 29, 1, 30)) == (utc(2026, 3, 29, 1), utc(2026, 3, 29, 2))


def test_berlin_repeated_hour_at_fall_back_is_two_distinct_windows():
    cal = Calendar("Europe/Berlin")
    tz = ZoneInfo("Europe/Berlin")
    first_t, second_t = utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)
    # both instants read 02:30 on the local clock
    assert datetime.fromtimestamp(first_t, tz).strftime("%H:%M") == "02:30"
    assert datetime.fromtimestamp(second_t, tz).strftime("%H:%M") == "02:30"
    first = cal.bounds("hour", first_t)
    second = cal.bounds("hour", second_t)
    assert first == (utc(2026, 10, 25, 0), utc(2026, 10, 25, 1))
    assert second == (utc(2026, 10, 25, 1), utc(2026, 10, 25, 2))
    assert first != second
    assert first[1] - first[0] == H and second[1] - second[0] == H
    # and the hour after them
    assert cal.bounds("hour", utc(2026, 10, 25, 2, 30)) == (utc(2026, 10, 25, 2), utc(2026, 10, 25, 3))


def test_berlin_week_month_quarter():
    cal = Calendar("Europe/Berlin")
    # the week of the spring-forward Sunday: Mon 23 Mar 00:00 CET .. Mon 30 Mar 00:00 CEST
    assert cal.bounds("week", utc(2026, 3, 25, 12)) == (utc(2026, 3, 22, 23), utc(2026, 3, 29, 22))
    assert cal.bounds("week", utc(2026, 3, 29, 21, 59)) == (utc(2026, 3, 22, 23), utc(2026, 3, 29, 22))
    assert cal.bounds("week", utc(2026, 3, 29, 22)) == (utc(2026, 3, 29, 22), utc(2026, 4, 5, 22))
    # Sunday 22:30 UTC in summer is already Monday in Berlin
    assert cal.bounds("week", utc(2026, 7, 19, 22, 30)) == (utc(2026, 7, 19, 22), utc(2026, 7, 26, 22))
    assert cal.bounds("month", utc(2026, 10, 15)) == (utc(2026, 9, 30, 22), utc(2026, 10, 31, 23))
    assert cal.bounds("month", utc(2026, 10, 31, 23, 30)) == (utc(2026, 10, 31, 23), utc(2026, 11, 30, 23))
    assert cal.bounds("quarter", utc(2026, 11, 15)) == (utc(2026, 9, 30, 22), utc(2026, 12, 31, 23))
    # 23:30 UTC on New Year's Eve is already 2027 in Berlin
    assert cal.bounds("quarter", utc(2026, 12, 31, 23, 30)) == (utc(2026, 12, 31, 23), utc(2027, 3, 31, 22))
    assert cal.bounds("month", utc(2026, 12, 31, 23, 30)) == (utc(2026, 12, 31, 23), utc(2027, 1, 31, 23))


# -- America/New_York ------------------------------------------------------------------------


def test_new_york_dst_days():
    cal = Calendar("America/New_York")
    start, end = cal.bounds("day", utc(2026, 3, 8, 17))
    assert (start, end) == (utc(2026, 3, 8, 5), utc(2026, 3, 9, 4))
    assert end - start == 23 * H
    start, end = cal.bounds("day", utc(2026, 11, 1, 17))
    assert (start, end) == (utc(2026, 11, 1, 4), utc(2026, 11, 2, 5))
    assert end - start == 25 * H
    # an ordinary day
    assert cal.bounds("day", utc(2026, 6, 1, 3)) == (utc(2026, 5, 31, 4), utc(2026, 6, 1, 4))


def test_new_york_repeated_hour():
    cal = Calendar("America/New_York")
    first = cal.bounds("hour", utc(2026, 11, 1, 5, 15))  # 01:15 EDT
    second = cal.bounds("hour", utc(2026, 11, 1, 6, 15))  # 01:15 EST
    assert first == (utc(2026, 11, 1, 5), utc(2026, 11, 1, 6))
    assert second == (utc(2026, 11, 1, 6), utc(2026, 11, 1, 7))


def test_new_york_week_month_quarter_year_end():
    cal = Calendar("America/New_York")
    t = utc(2027, 1, 1, 3)  # still Thursday Dec 31 2026, 22:00 EST
    assert cal.bounds("day", t) == (utc(2026, 12, 31, 5), utc(2027, 1, 1, 5))
    assert cal.bounds("week", t) == (utc(2026, 12, 28, 5), utc(2027, 1, 4, 5))
    assert cal.bounds("month", t) == (utc(2026, 12, 1, 5), utc(2027, 1, 1, 5))
    assert cal.bounds("quarter", t) == (utc(2026, 10, 1, 4), utc(2027, 1, 1, 5))
    assert cal.bounds("quarter", utc(2026, 5, 1)) == (utc(2026, 4, 1, 4), utc(2026, 7, 1, 4))


# -- Asia/Kolkata (+05:30) --------------------------------------------------------------------


def test_kolkata_hours_start_at_half_past_utc():
    cal = Calendar("Asia/Kolkata")
    assert cal.bounds("hour", utc(2026, 6, 1, 10, 10)) == (utc(2026, 6, 1, 9, 30), utc(2026, 6, 1, 10, 30))
    assert cal.bounds("hour", utc(2026, 6, 1, 10, 40)) == (utc(2026, 6, 1, 10, 30), utc(2026, 6, 1, 11, 30))
    assert cal.bounds("day", utc(2026, 6, 1, 10)) == (utc(2026, 5, 31, 18, 30), utc(2026, 6, 1, 18, 30))
    # minutes are still whole UTC minutes
    assert cal.bounds("minute", utc(2026, 6, 1, 10, 40, 59)) == (utc(2026, 6, 1, 10, 40), utc(2026, 6, 1, 10, 41))


# -- properties --------------------------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Sydney"]


@pytest.mark.parametrize("zone", ZONES)
def test_bounds_all_equals_bounds_for_each_kind(zone):
    rng = random.Random(zone)
    cal = Calendar(zone)
    ref = Calendar(zone)
    lo, hi = utc(2025, 1, 1), utc(2028, 1, 1)
    samples = [rng.uniform(lo, hi) for _ in range(400)]
    # include the instants around every 2026 transition of the zone
    samples += [utc(2026, 3, 29, 1) + d for d in (-60.5, -0.5, 0.0, 0.5, 59.5)]
    samples += [utc(2026, 10, 25, 1) + d for d in (-60.5, -0.5, 0.0, 0.5, 3599.5)]
    samples += [utc(2026, 11, 1, 6) + d for d in (-0.5, 0.0, 0.5)]
    for t in samples:
        got = cal.bounds_all(t)
        assert got == tuple(ref.bounds(kind, t) for kind in WINDOW_KINDS), t
        for start, end in got:
            assert start <= t < end


def test_bounds_all_cache_survives_its_limit():
    cal = Calendar("Europe/Berlin")
    base = utc(2026, 1, 1)
    for i in range(Calendar._CACHE_LIMIT + 10):
        t = base + i * 61.5
        assert cal.bounds_all(t)[1] == cal.bounds("hour", t)
    assert len(cal._cache) <= Calendar._CACHE_LIMIT


def _tile(cal: Calendar, kind: str, first: float, until: float) -> list[tuple[float, float]]:
    out = []
    start, end = cal.bounds(kind, first)
    while start < until:
        out.append((start, end))
        nxt = cal.bounds(kind, end)
        assert nxt[0] == end, (kind, start, end, nxt)  # the next window starts where this ends
        start, end = nxt
    return out


def test_a_year_of_berlin_days_tiles():
    cal = Calendar("Europe/Berlin")
    tz = ZoneInfo("Europe/Berlin")
    days = _tile(cal, "day", utc(2026, 1, 1, 12), utc(2026, 12, 31, 23))
    assert len(days) == 365
    lengths = sorted(e - s for s, e in days)
    assert lengths[0] == 23 * H and lengths[-1] == 25 * H
    assert lengths.count(24 * H) == 363
    for (s, _), n in zip(days, range(365), strict=True):
        local = datetime.fromtimestamp(s, tz)
        assert local.date() == date(2026, 1, 1) + timedelta(days=n)
        assert (local.hour, local.minute) == (0, 0)


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC"])
def test_a_year_of_every_kind_tiles(zone):
    cal = Calendar(zone)
    lo, hi = utc(2026, 1, 1), utc(2027, 1, 1)
    hours = _tile(cal, "hour", lo, hi)
    assert all(e - s == H for s, e in hours)
    weeks = _tile(cal, "week", lo, hi)
    tz = ZoneInfo(zone)
    assert all(datetime.fromtimestamp(s, tz).weekday() == 0 for s, _ in weeks)
    months = _tile(cal, "month", lo, hi)
    assert all(datetime.fromtimestamp(s, tz).day == 1 for s, _ in months)
    quarters = _tile(cal, "quarter", lo, hi)
    q_months = [datetime.fromtimestamp(s, tz).month for s, _ in quarters]
    assert all(m in (1, 4, 7, 10) for m in q_months)
    assert all((b - a) % 12 == 3 for a, b in zip(q_months, q_months[1:], strict=False))
    assert all(datetime.fromtimestamp(s, tz).day == 1 for s, _ in quarters)
    # each larger window is made of whole smaller windows
    for big, small in (("day", "hour"), ("week", "day"), ("month", "day"), ("quarter", "month")):
        for s, e in _tile(cal, big, lo, hi)[:60]:
            assert cal.bounds(small, s)[0] == s
            assert cal.bounds(small, e - 1)[1] == e


def test_every_minute_of_the_berlin_dst_days_is_in_its_windows():
    cal = Calendar("Europe/Berlin")
    for day_start in (utc(2026, 3, 28, 22), utc(2026, 10, 24, 21)):
        for m in range(27 * 60):
            t = day_start + m * 60 + 17.0
            for start, end in cal.bounds_all(t):
                assert start <= t < end

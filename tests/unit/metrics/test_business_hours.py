"""Business hours for speed to lead. Every expected number is derived by hand in a comment.

Calendar facts used (2026): Jan 1 is a Thursday, so Fri Jan 2, Mon Jan 5, Wed Jan 7, Fri Jan 9,
Mon Jan 12; Dec 24 is a Thursday. DST: EU on the last Sundays of March / October at 01:00 UTC
(Mar 29, Oct 25), US on the second Sunday of March / first Sunday of November at 02:00 local
(Mar 8, Nov 1). Berlin is UTC+1 in winter, UTC+2 in summer; New York UTC-5 / UTC-4.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from metrics import business_hours as bh
from metrics.business_hours import BusinessCalendar, BusinessHours

H = 3600.0
M = 60.0
BERLIN = "Europe/Berlin"
NEW_YORK = "America/New_York"


def utc(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def local(zone: str, *args: int) -> float:
    return datetime(*args, tzinfo=ZoneInfo(zone)).timestamp()


UTC_9_17 = BusinessHours()  # UTC, Monday-Friday, 09:00-17:00


# -- the spec example and the basic shapes ----------------------------------------------------


def test_spec_example_friday_evening_to_monday_morning():
    # Fri 18:00 is after closing (0), Sat and Sun are not working days (0),
    # Mon 09:00-09:10 is 10 minutes = 600 s.
    assert UTC_9_17.working_seconds(utc(2026, 1, 2, 18), utc(2026, 1, 5, 9, 10)) == 600.0


def test_spec_example_in_a_local_zone():
    # Same wall times in Berlin: the instants differ from UTC, the working time does not (600 s).
    hours = BusinessHours(timezone=BERLIN)
    start, end = local(BERLIN, 2026, 1, 2, 18), local(BERLIN, 2026, 1, 5, 9, 10)
    assert hours.working_seconds(start, end) == 600.0
    # ...whereas the UTC calendar sees Fri 17:00 UTC -> Mon 08:10 UTC: nothing.
    assert UTC_9_17.working_seconds(start, end) == 0.0


def test_same_day_within_hours():
    # Wed 10:00 -> 11:30, all inside 09:00-17:00: 1.5 h = 5400 s.
    assert UTC_9_17.working_seconds(utc(2026, 1, 7, 10), utc(2026, 1, 7, 11, 30)) == 5400.0


def test_start_before_opening():
    # Wed 07:00 -> 10:00: only 09:00-10:00 counts = 3600 s.
    assert UTC_9_17.working_seconds(utc(2026, 1, 7, 7), utc(2026, 1, 7, 10)) == 3600.0


def test_end_after_closing():
    # Wed 16:00 -> 20:00: only 16:00-17:00 counts = 3600 s.
    assert UTC_9_17.working_seconds(utc(2026, 1, 7, 16), utc(2026, 1, 7, 20)) == 3600.0


def test_whole_day_around_the_hours():
    # Wed 07:00 -> 20:00 covers the full 8 h day = 28800 s.
    assert UTC_9_17.working_seconds(utc(2026, 1, 7, 7), utc(2026, 1, 7, 20)) == 28800.0


def test_end_is_exclusive_and_fractions_count():
    # Wed 16:59:59.5 -> 17:00:30: only the half second before closing counts.
    start = utc(2026, 1, 7, 16, 59, 59) + 0.5
    assert UTC_9_17.working_seconds(start, utc(2026, 1, 7, 17, 0, 30)) == 0.5


def test_spanning_a_weekend():
    # Fri 15:00 -> Mon 11:00: Fri 15:00-17:00 (2 h) + Sat, Sun (0) + Mon 09:00-11:00 (2 h)
    # = 4 h = 14400 s.
    assert UTC_9_17.working_seconds(utc(2026, 1, 9, 15), utc(2026, 1, 12, 11)) == 14400.0


def test_weekend_only_is_zero():
    # Sat 10:00 -> Sun 16:00: no working day in between.
    assert UTC_9_17.working_seconds(utc(2026, 1, 10, 10), utc(2026, 1, 11, 16)) == 0.0


def test_a_holiday():
    # Fri 15:00 -> Tue 11:00 with Monday Jan 12 a holiday:
    # Fri 2 h + Mon 0 (holiday) + Tue 09:00-11:00 2 h = 4 h = 14400 s.
    # Without the holiday Monday adds its full 8 h: 12 h = 43200 s.
    start, end = utc(2026, 1, 9, 15), utc(2026, 1, 13, 11)
    assert BusinessHours(holidays=("2026-01-12",)).working_seconds(start, end) == 14400.0
    assert UTC_9_17.working_seconds(start, end) == 43200.0


def test_holiday_is_a_local_date():
    # Berlin Mon 2026-01-12 00:30 local is Sun 23:30 UTC: the holiday is the local Monday, so a
    # span from Berlin Mon 00:30 to Mon 23:00 local is 0; without the holiday it is 8 h.
    start, end = local(BERLIN, 2026, 1, 12, 0, 30), local(BERLIN, 2026, 1, 12, 23)
    assert BusinessHours(timezone=BERLIN, holidays=("2026-01-12",)).working_seconds(start, end) == 0
    assert BusinessHours(timezone=BERLIN).working_seconds(start, end) == 28800.0


def test_start_equals_end():
    # An empty interval inside working hours is 0.
    t = utc(2026, 1, 7, 10)
    assert UTC_9_17.working_seconds(t, t) == 0.0


def test_end_before_start():
    # A touch recorded before creation (clock skew) never waits a negative time.
    assert UTC_9_17.working_seconds(utc(2026, 1, 7, 11), utc(2026, 1, 7, 10)) == 0.0


@pytest.mark.parametrize(("start", "end"), [(math.inf, 0.0), (0.0, math.inf), (math.nan, 1.0)])
def test_non_finite_bounds_are_rejected(start: float, end: float):
    # An infinite span would walk days forever; NaN would silently read as "no wait".
    with pytest.raises(ValueError, match="finite"):
        UTC_9_17.working_seconds(start, end)


def test_custom_days_and_hours():
    # Sunday-only team 10:30-12:00: Sat 2026-01-10 00:00 -> Mon 2026-01-12 00:00 covers one
    # Sunday = 1.5 h = 5400 s.
    hours = BusinessHours(days=(6,), start="10:30", end="12:00")
    assert hours.working_seconds(utc(2026, 1, 10), utc(2026, 1, 12)) == 5400.0


# -- daylight saving --------------------------------------------------------------------------


def test_dst_spring_day_is_eight_hours_in_berlin():
    # 2026-03-29 is a Sunday (days include 6). 09:00 CEST = 07:00 UTC, 17:00 CEST = 15:00 UTC:
    # 8 h = 28800 s, although that local day is only 23 h long.
    hours = BusinessHours(timezone=BERLIN, days=(6,))
    day_start, day_end = local(BERLIN, 2026, 3, 29), local(BERLIN, 2026, 3, 30)
    assert day_end - day_start == 23 * H
    assert hours.working_seconds(day_start, day_end) == 28800.0
    assert hours.working_seconds(utc(2026, 3, 29, 7), utc(2026, 3, 29, 15)) == 28800.0
    # 06:00-08:00 UTC is 08:00-10:00 CEST: only 09:00-10:00 counts = 3600 s.
    assert hours.working_seconds(utc(2026, 3, 29, 6), utc(2026, 3, 29, 8)) == 3600.0


def test_dst_autumn_day_is_eight_hours_in_berlin():
    # 2026-10-25 (Sunday) is 25 h long; 09:00 CET = 08:00 UTC, 17:00 CET = 16:00 UTC: 28800 s.
    hours = BusinessHours(timezone=BERLIN, days=(6,))
    day_start, day_end = local(BERLIN, 2026, 10, 25), local(BERLIN, 2026, 10, 26)
    assert day_end - day_start == 25 * H
    assert hours.working_seconds(day_start, day_end) == 28800.0
    assert hours.working_seconds(utc(2026, 10, 25, 8), utc(2026, 10, 25, 16)) == 28800.0


def test_dst_spring_day_in_new_york():
    # 2026-03-08 (Sunday): 09:00 EDT = 13:00 UTC, 17:00 EDT = 21:00 UTC: 28800 s.
    hours = BusinessHours(timezone=NEW_YORK, days=(6,))
    assert hours.working_seconds(utc(2026, 3, 8, 13), utc(2026, 3, 8, 21)) == 28800.0
    assert hours.working_seconds(utc(2026, 3, 8, 0), utc(2026, 3, 9, 12)) == 28800.0


def test_short_spans_are_exact_even_across_a_transition_in_working_hours():
    # Hours 00:00-06:00 on 2026-03-29 in Berlin: 00:00 CET = Mar 28 23:00 UTC,
    # 06:00 CEST = 04:00 UTC, so the clock jump makes it 5 h = 18000 s, not 6 h.
    hours = BusinessHours(timezone=BERLIN, days=(6,), start="00:00", end="06:00")
    assert hours.working_seconds(utc(2026, 3, 28, 12), utc(2026, 3, 29, 12)) == 18000.0


def test_fast_path_assumption_is_documented_not_hidden():
    # The fast path counts a whole day inside a long span at its nominal length. With hours
    # that straddle the 02:00 jump (outside the documented assumption) it is 1 h over:
    # slow = 5 h for Mar 29 + 6 h for each of the other Sundays; fast = 6 h for every Sunday.
    # Spans Mar 1 -> Apr 30 hold the Sundays Mar 1 (partial from 12:00 UTC: 0 h), 8, 15, 22,
    # 29, Apr 5, 12, 19, 26. If this ever fails because the fast path became exact, update the
    # module docstring and delete this test.
    hours = BusinessHours(timezone=BERLIN, days=(6,), start="00:00", end="06:00")
    start, end = utc(2026, 3, 1, 12), utc(2026, 4, 30, 12)
    slow = bh._working_seconds_slow(hours, start, end)
    assert slow == 7 * 6 * H + 5 * H  # Mar 8, 15, 22, Apr 5, 12, 19, 26 full + Mar 29 short
    assert bh._working_seconds_fast(hours, start, end) - slow == H


# -- fast path --------------------------------------------------------------------------------


def test_fifty_two_weeks_exactly():
    # Mon 2026-01-05 00:00 UTC + 364 days = Mon 2027-01-04 00:00 UTC: 52 weeks x 5 days x 8 h
    # = 2080 h = 7488000 s.
    assert UTC_9_17.working_seconds(utc(2026, 1, 5), utc(2027, 1, 4)) == 7_488_000.0


def test_long_span_does_not_walk_days(monkeypatch: pytest.MonkeyPatch):
    # Ten years would be ~3650 day intervals on the slow path; the fast path computes exactly
    # two (the partial first and last day) however long the span.
    calls = 0
    original = bh._Compiled.interval

    def counting(self: bh._Compiled, ordinal: int) -> tuple[float, float]:
        nonlocal calls
        calls += 1
        return original(self, ordinal)

    monkeypatch.setattr(bh._Compiled, "interval", counting)
    hours = BusinessHours(timezone=BERLIN, holidays=("2027-12-24", "2030-01-01"))
    assert hours.working_seconds(utc(2026, 1, 7, 10), utc(2036, 1, 7, 10)) > 0
    assert calls <= 2


def test_public_method_switches_to_the_fast_path_after_fourteen_days(
    monkeypatch: pytest.MonkeyPatch,
):
    # A span of exactly 14 local days walks days; 15 days uses the arithmetic path.
    used: list[str] = []
    monkeypatch.setattr(bh, "_slow", lambda *a: used.append("slow") or 0.0)
    monkeypatch.setattr(bh, "_fast", lambda *a: used.append("fast") or 0.0)
    UTC_9_17.working_seconds(utc(2026, 1, 5, 10), utc(2026, 1, 19, 10))
    UTC_9_17.working_seconds(utc(2026, 1, 5, 10), utc(2026, 1, 20, 10))
    assert used == ["slow", "fast"]


_DST_DATES = {
    BERLIN: (date(2026, 3, 29), date(2026, 10, 25)),
    NEW_YORK: (date(2026, 3, 8), date(2026, 11, 1)),
}


def _random_case(rng: random.Random) -> tuple[BusinessHours, float, float]:
    zone = rng.choice([BERLIN, NEW_YORK])
    tz = ZoneInfo(zone)
    # Days: a random non-empty subset, Sunday included often so DST Sundays are working days.
    days = tuple(d for d in range(7) if rng.random() < 0.6) or (6,)
    # Hours start at 03:00 or later: the documented assumption (no offset change inside hours).
    opening = rng.randrange(3 * 60, 13 * 60, 15)
    closing = rng.randrange(opening + 15, 24 * 60, 15)
    if rng.random() < 0.7:  # a span around a DST change
        anchor = rng.choice(_DST_DATES[zone]) - timedelta(days=rng.randrange(0, 70))
    else:
        anchor = date(2026, 1, 1) + timedelta(days=rng.randrange(0, 300))
    first = datetime(anchor.year, anchor.month, anchor.day, tzinfo=tz).timestamp()
    start = first + rng.uniform(0, 86400)
    end = start + 70 * 86400 + rng.uniform(-3 * 86400, 3 * 86400)  # ten weeks, give or take
    holidays = tuple(
        (anchor + timedelta(days=rng.randrange(-1, 75))).isoformat()
        for _ in range(rng.randrange(0, 8))
    )
    hours = BusinessHours(
        timezone=zone,
        days=days,
        start=f"{opening // 60:02d}:{opening % 60:02d}",
        end=f"{closing // 60:02d}:{closing % 60:02d}",
        holidays=holidays,
    )
    return hours, start, end


def test_fast_path_equals_day_by_day_for_random_ten_week_spans():
    # Property: for 200 random ten-week spans (seeded), the arithmetic path, the day-by-day
    # path and the public method agree to the microsecond, across DST weeks in both zones.
    rng = random.Random(20260329)
    covered_dst = 0
    for _ in range(200):
        hours, start, end = _random_case(rng)
        slow = bh._working_seconds_slow(hours, start, end)
        fast = bh._working_seconds_fast(hours, start, end)
        assert fast == pytest.approx(slow, abs=1e-6), (hours, start, end)
        assert hours.working_seconds(start, end) == pytest.approx(slow, abs=1e-6)
        assert slow > 0
        covered_dst += any(
            start <= datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp() < end
            for d in _DST_DATES[hours.timezone]
        )
    assert covered_dst >= 100  # the property really ran over DST changes


# -- validation -------------------------------------------------------------------------------


def test_defaults_and_normalisation():
    hours = BusinessHours(days=[4, 0, 2], holidays=["2026-12-25", "2026-01-01", "2026-12-25"])
    assert hours.timezone == "UTC" and hours.start == "09:00" and hours.end == "17:00"
    assert hours.days == (0, 2, 4)
    assert hours.holidays == ("2026-01-01", "2026-12-25")
    assert hash(hours) == hash(BusinessHours(days=(0, 2, 4), holidays=("2026-01-01", "2026-12-25")))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"start": "18:00", "end": "09:00"}, "overnight"),
        ({"start": "09:00", "end": "09:00"}, "must be after start"),
        ({"start": "9:00"}, "'HH:MM'"),
        ({"end": "24:00"}, "between 00:00 and 23:59"),
        ({"start": "08:60"}, "between 00:00 and 23:59"),
        ({"timezone": "Mars/Olympus_Mons"}, "unknown time zone"),
        ({"timezone": ""}, "IANA"),
        ({"days": (0, 7)}, "0-6"),
        ({"days": (-1,)}, "0-6"),
        ({"days": (True,)}, "0-6"),
        ({"days": ()}, "at least one"),
        ({"days": (1, 1)}, "repeat"),
        ({"holidays": ("2026-02-30",)}, "not a valid date"),
        ({"holidays": ("25.12.2026",)}, "YYYY-MM-DD"),
        ({"holidays": ("20261225",)}, "YYYY-MM-DD"),
    ],
)
def test_invalid_hours(kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        BusinessHours(**kwargs)


# -- calendar ---------------------------------------------------------------------------------


def test_team_in_new_york_vs_default_berlin():
    # Wed 2026-01-07 10:00-16:00 UTC.
    # Berlin (UTC+1): 11:00-17:00 local, all working = 6 h = 21600 s.
    # New York (UTC-5): 05:00-11:00 local, working 09:00-11:00 = 2 h = 7200 s.
    calendar = BusinessCalendar(
        teams={"team-east": BusinessHours(timezone=NEW_YORK)},
        default=BusinessHours(timezone=BERLIN),
    )
    start, end = utc(2026, 1, 7, 10), utc(2026, 1, 7, 16)
    assert calendar.waited("team-east", start, end) == 7200.0
    assert calendar.waited("team-west", start, end) == 21600.0  # no entry: default
    assert calendar.waited(None, start, end) == 21600.0  # no team: default
    assert calendar.has_hours("team-east") and calendar.has_hours("team-west")
    assert calendar.hours_for("team-east").timezone == NEW_YORK


def test_team_without_hours_and_no_default_is_wall_clock():
    # Team "b" has no entry and there is no default: plain end - start, never negative.
    calendar = BusinessCalendar(teams={"a": UTC_9_17})
    assert not calendar.has_hours("b") and not calendar.has_hours(None)
    assert calendar.has_hours("a")
    assert (
        calendar.waited("b", utc(2026, 1, 2, 18), utc(2026, 1, 5, 9, 10))
        == 2 * 86400 + 15 * H + 10 * M
    )
    assert calendar.waited("b", 700.0, 100.0) == 0.0
    assert calendar.waited("a", utc(2026, 1, 2, 18), utc(2026, 1, 5, 9, 10)) == 600.0


def test_empty_calendar_is_wall_clock():
    assert BusinessCalendar().waited("x", 100.0, 700.5) == 600.5


def test_calendar_rejects_non_hours():
    with pytest.raises(TypeError):
        BusinessCalendar(teams={"a": {"timezone": "UTC"}})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        BusinessCalendar(default="UTC")  # type: ignore[arg-type]


def test_calendar_teams_are_read_only():
    calendar = BusinessCalendar(teams={"a": UTC_9_17})
    with pytest.raises(TypeError):
        calendar.teams["b"] = UTC_9_17  # type: ignore[index]


# -- from_json --------------------------------------------------------------------------------

EXAMPLE = """
{"default": {"timezone": "Europe/Berlin", "days": [0,1,2,3,4], "start": "09:00", "end": "17:00"},
 "teams": {"team-east": {"timezone": "America/New_York", "start": "08:30", "end": "17:30",
                         "holidays": ["2026-12-25"]}}}
"""


def test_from_json_example():
    calendar = BusinessCalendar.from_json(EXAMPLE)
    assert calendar.default == BusinessHours(timezone=BERLIN)
    assert calendar.teams["team-east"] == BusinessHours(
        timezone=NEW_YORK, start="08:30", end="17:30", holidays=("2026-12-25",)
    )
    # team-east, Thu Dec 24 12:00 -> Mon Dec 28 10:00 New York time:
    # Thu 12:00-17:30 = 5.5 h; Fri Dec 25 holiday; Sat, Sun off; Mon 08:30-10:00 = 1.5 h.
    # Total 7 h = 25200 s.
    start, end = local(NEW_YORK, 2026, 12, 24, 12), local(NEW_YORK, 2026, 12, 28, 10)
    assert calendar.waited("team-east", start, end) == 25200.0
    # Default (Berlin) over the same instants, 18:00 Thu -> 16:00 Mon Berlin time:
    # Thu 0 (after 17:00); Fri Dec 25 8 h (no holiday in the default); Mon 09:00-16:00 7 h.
    # Total 15 h = 54000 s.
    assert calendar.waited("team-west", start, end) == 54000.0


def test_from_json_team_fields_default_to_business_hours_defaults():
    # A team entry is a full schedule: omitted fields are the BusinessHours defaults (UTC,
    # Mon-Fri, 09:00-17:00), not copied from "default".
    calendar = BusinessCalendar.from_json('{"teams": {"t": {"start": "10:00"}}}')
    assert calendar.teams["t"] == BusinessHours(start="10:00")
    assert calendar.default is None
    assert not calendar.has_hours("other")


@pytest.mark.parametrize("text", [None, "", "   \n"])
def test_from_json_empty_means_no_hours(text: str | None):
    calendar = BusinessCalendar.from_json(text)
    assert not calendar.has_hours("any") and not calendar.has_hours(None)
    assert calendar.waited("any", 0.0, 3600.0) == 3600.0


@pytest.mark.parametrize("text", ["{}", '{"default": null, "teams": null}', '{"teams": {}}'])
def test_from_json_empty_object_means_no_hours(text: str):
    calendar = BusinessCalendar.from_json(text)
    assert not calendar.has_hours(None) and not calendar.has_hours("t")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # Each message names the problem and whose schedule has it.
        (
            '{"default": {"timezone": "Europe/Berlln"}}',
            "default: unknown time zone 'Europe/Berlln'",
        ),
        ('{"teams": {"t": {"start": "9am"}}}', "team 't': start must be a local time 'HH:MM'"),
        ('{"teams": {"t": {"start": "17:00", "end": "08:00"}}}', "team 't': .*overnight"),
        ('{"default": {"days": [0, 7]}}', "default: days must be integers 0-6"),
        (
            '{"default": {"days": ["mon"]}}',
            r"default: Expected `int`, got `str` - at `\$\.days\[0\]`",
        ),
        ('{"default": {"days": [true]}}', "default: Expected `int`, got `bool`"),
        (
            '{"default": {"holidays": ["2026-13-01"]}}',
            "default: holiday '2026-13-01' is not a valid",
        ),
        ('{"default": {"timezon": "UTC"}}', "default: Object contains unknown field `timezon`"),
        ('{"defaults": {}}', r"unknown key\(s\) \['defaults'\]"),
        ('{"teams": ["t"]}', "'teams' must be an object"),
        ('{"teams": {"t": null}}', "team 't': Expected `object`, got `null`"),
        ('{"teams": {"": {}}}', "team id in 'teams' is empty"),
        ("null", "expected a JSON object"),
        ("[]", "expected a JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_from_json_invalid(text: str, message: str):
    with pytest.raises(ValueError, match=message):
        BusinessCalendar.from_json(text)

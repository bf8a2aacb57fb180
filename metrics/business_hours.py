"""Business hours for "speed to lead": count only the time a team could have answered.

A lead created on Friday evening and touched first thing on Monday was not neglected for a
whole weekend. With a team's working days, hours and time zone configured, the wait is the
*working* time between creation and first touch: Friday 18:00 to Monday 09:10 with hours
09:00-17:00 is ten minutes. Teams without configured hours (and no default) keep wall-clock
time, so enabling the feature never changes anything for teams it was not asked for.

Working intervals are computed in the team's local wall time and converted to epoch seconds
with :mod:`zoneinfo` (``fold=0``), so a working day 09:00-17:00 is 8 hours on a daylight-saving
day too. Long spans (more than 14 local days) count the days strictly inside the span
arithmetically instead of one by one; see :func:`_fast` for the assumption
that makes this exact.

This module is pure (no I/O); the configuration text is handed to
:meth:`BusinessCalendar.from_json` by whoever reads the environment.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from bisect import bisect_left, bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from zoneinfo import ZoneInfo

import msgspec

__all__ = ["BusinessCalendar", "BusinessHours"]

_TIME_RE = re.compile(r"(\d{2}):(\d{2})")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")
_DAYS_PER_WEEK = 7
# Spans longer than this many local days take the arithmetic path; shorter ones are cheap
# enough day by day and avoid relying on the no-transition-in-working-hours assumption at all.
_FAST_PATH_MIN_DAYS = 14


def _parse_time(name: str, value: object) -> int:
    """``"HH:MM"`` -> minutes after local midnight. Strict, so a typo fails at startup."""
    match = _TIME_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{name} must be a local time 'HH:MM', got {value!r}")
    hours, minutes = int(match[1]), int(match[2])
    if hours > 23 or minutes > 59:
        raise ValueError(f"{name} must be a local time between 00:00 and 23:59, got {value!r}")
    return hours * 60 + minutes


def _parse_zone(value: object) -> ZoneInfo:
    """An IANA zone, or ValueError (zoneinfo raises KeyError/ValueError/TypeError variously)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"timezone must be an IANA time zone name, got {value!r}")
    try:
        return ZoneInfo(value)
    except (KeyError, ValueError, TypeError, OSError) as exc:  # ZoneInfoNotFoundError is a KeyError
        raise ValueError(f"unknown time zone {value!r}") from exc


def _parse_holiday(value: object) -> dt.date:
    # date.fromisoformat alone would also accept "20261225"; the format is "YYYY-MM-DD".
    if not isinstance(value, str) or _DATE_RE.fullmatch(value) is None:
        raise ValueError(f"holidays must be local dates 'YYYY-MM-DD', got {value!r}")
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"holiday {value!r} is not a valid date") from exc


class BusinessHours(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One team's working time: days, hours (local wall time) and holidays in one time zone.

    ``days`` are ISO weekdays minus one (Monday=0 ... Sunday=6), like :meth:`datetime.date.weekday`.
    ``end`` is exclusive and must be after ``start``: overnight shifts are not supported, because
    a working interval that wraps midnight belongs to two local dates and would make holidays and
    weekdays ambiguous. Unknown fields are rejected so a misspelt key is an error, not a no-op.

    Validation runs on construction and on decoding (``__post_init__``), so an invalid value can
    never reach the hot path. ``days`` and ``holidays`` are normalised to sorted tuples so that
    equal configurations compare (and hash) equal.
    """

    timezone: str = "UTC"
    days: tuple[int, ...] = (0, 1, 2, 3, 4)
    start: str = "09:00"
    end: str = "17:00"
    holidays: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _parse_zone(self.timezone)
        opening = _parse_time("start", self.start)
        closing = _parse_time("end", self.end)
        if closing <= opening:
            raise ValueError(
                f"end ({self.end}) must be after start ({self.start}): business hours cannot "
                "span midnight (overnight shifts are not supported)"
            )
        days = tuple(self.days)  # a list given to the constructor would make the struct unhashable
        if not days:
            raise ValueError("days must list at least one working day (Monday=0 ... Sunday=6)")
        for day in days:
            if isinstance(day, bool) or not isinstance(day, int) or not 0 <= day <= 6:
                raise ValueError(f"days must be integers 0-6 (Monday=0 ... Sunday=6), got {day!r}")
        if len(set(days)) != len(days):
            raise ValueError(f"days must not repeat a day, got {list(days)}")
        holidays = tuple(self.holidays)
        for holiday in holidays:
            _parse_holiday(holiday)
        msgspec.structs.force_setattr(self, "days", tuple(sorted(days)))
        msgspec.structs.force_setattr(self, "holidays", tuple(sorted(set(holidays))))

    def working_seconds(self, start: float, end: float) -> float:
        """Seconds of working time in ``[start, end)`` (epoch seconds); 0 if ``end <= start``.

        Spans of more than 14 local days use the arithmetic fast path; shorter spans are walked
        day by day. Both agree whenever no UTC-offset change happens strictly inside working
        hours (see :func:`_fast`).
        """
        _check_finite(start, end)
        if not end > start:
            return 0.0
        compiled = _compile(self)
        first, last = compiled.local_ordinal(start), compiled.local_ordinal(end)
        if last - first > _FAST_PATH_MIN_DAYS:
            return _fast(compiled, start, end, first, last)
        return _slow(compiled, start, end, first, last)


def _check_finite(start: float, end: float) -> None:
    # An infinite span would make the day walk never end; NaN would silently compare false.
    if not (math.isfinite(start) and math.isfinite(end)):
        raise ValueError(f"start and end must be finite epoch seconds, got {start!r}, {end!r}")


@dataclass(frozen=True, slots=True)
class _Compiled:
    """The parsed form of a :class:`BusinessHours`, built once per distinct configuration."""

    tz: ZoneInfo
    opening: dt.time
    closing: dt.time
    day_seconds: float  # nominal length of one working day
    weekdays: frozenset[int]
    week_count: int  # working days in a full week
    holiday_ordinals: tuple[int, ...]  # sorted
    holiday_set: frozenset[int]

    def local_ordinal(self, t: float) -> int:
        """Proleptic ordinal of the local date containing instant ``t``."""
        return dt.datetime.fromtimestamp(t, self.tz).toordinal()

    def is_working_day(self, ordinal: int) -> bool:
        return (ordinal - 1) % _DAYS_PER_WEEK in self.weekdays and ordinal not in self.holiday_set

    def interval(self, ordinal: int) -> tuple[float, float]:
        """Epoch bounds of the working interval of one local date (``fold=0``: the earlier
        instant of an ambiguous wall time)."""
        day = dt.date.fromordinal(ordinal)
        opening = dt.datetime.combine(day, self.opening, self.tz).timestamp()
        closing = dt.datetime.combine(day, self.closing, self.tz).timestamp()
        return opening, closing

    def overlap(self, ordinal: int, start: float, end: float) -> float:
        """Working seconds of one local date inside ``[start, end)``."""
        if not self.is_working_day(ordinal):
            return 0.0
        opening, closing = self.interval(ordinal)
        lo, hi = max(opening, start), min(closing, end)
        return hi - lo if hi > lo else 0.0

    def working_days_between(self, first: int, last: int) -> int:
        """Working days among the local dates ``first..last`` (ordinals, inclusive), in
        O(holidays in range): whole weeks count ``week_count`` each, the remainder is checked
        weekday by weekday, and holidays on working weekdays are subtracted."""
        if last < first:
            return 0
        n = last - first + 1
        weeks, rest = divmod(n, _DAYS_PER_WEEK)
        count = weeks * self.week_count
        # The remainder days are the last `rest` days, whose weekdays are those of first..first+rest-1.
        weekday = (first - 1) % _DAYS_PER_WEEK  # date.fromordinal(1) is a Monday
        count += sum(1 for i in range(rest) if (weekday + i) % _DAYS_PER_WEEK in self.weekdays)
        lo = bisect_left(self.holiday_ordinals, first)
        hi = bisect_right(self.holiday_ordinals, last)
        count -= sum(
            1
            for ordinal in self.holiday_ordinals[lo:hi]
            if (ordinal - 1) % _DAYS_PER_WEEK in self.weekdays
        )
        return count


@lru_cache(maxsize=1024)
def _compile(hours: BusinessHours) -> _Compiled:
    """Parse once per configuration (frozen structs hash by value), not once per event."""
    opening = _parse_time("start", hours.start)
    closing = _parse_time("end", hours.end)
    weekdays = frozenset(hours.days)
    holidays = sorted({_parse_holiday(h).toordinal() for h in hours.holidays})
    return _Compiled(
        tz=_parse_zone(hours.timezone),
        opening=dt.time(opening // 60, opening % 60),
        closing=dt.time(closing // 60, closing % 60),
        day_seconds=float((closing - opening) * 60),
        weekdays=weekdays,
        week_count=len(weekdays),
        holiday_ordinals=tuple(holidays),
        holiday_set=frozenset(holidays),
    )


def _slow(compiled: _Compiled, start: float, end: float, first: int, last: int) -> float:
    """Day by day: every local date from ``first`` to ``last`` gets its own exact interval."""
    return sum(compiled.overlap(ordinal, start, end) for ordinal in range(first, last + 1))


def _fast(compiled: _Compiled, start: float, end: float, first: int, last: int) -> float:
    """The first and last local dates exactly, every date strictly between them arithmetically.

    A date strictly between the dates of ``start`` and ``end`` lies wholly inside the span, so
    its contribution is its full working interval. That interval is taken to be the nominal
    ``end - start`` wall-clock length, which is exact as long as no UTC-offset change falls
    strictly inside working hours. Real zones change offset at night (Europe at 02:00/03:00,
    North America at 02:00 local), so any hours starting at 03:00 or later are exact there:
    2026-03-29 09:00-17:00 in Europe/Berlin is 8 h. Hours that straddle a transition (say
    00:00-06:00 on a DST night) could be off by the jump on spans of more than 14 days only;
    shorter spans use :func:`_slow`, which is always exact.
    """
    if last <= first + 1:
        return _slow(compiled, start, end, first, last)
    interior = compiled.working_days_between(first + 1, last - 1) * compiled.day_seconds
    return compiled.overlap(first, start, end) + interior + compiled.overlap(last, start, end)


def _working_seconds_slow(hours: BusinessHours, start: float, end: float) -> float:
    """Reference path for tests: always day by day, whatever the span."""
    _check_finite(start, end)
    if not end > start:
        return 0.0
    compiled = _compile(hours)
    return _slow(compiled, start, end, compiled.local_ordinal(start), compiled.local_ordinal(end))


def _working_seconds_fast(hours: BusinessHours, start: float, end: float) -> float:
    """Arithmetic path for tests: used whatever the span (the public method uses it > 14 days)."""
    _check_finite(start, end)
    if not end > start:
        return 0.0
    compiled = _compile(hours)
    return _fast(compiled, start, end, compiled.local_ordinal(start), compiled.local_ordinal(end))


_CONFIG_KEYS = frozenset({"default", "teams"})
_CONFIG_ERROR = "invalid business hours configuration"


def _hours_from(value: object, where: str) -> BusinessHours:
    """One schedule from decoded JSON; errors say whose schedule it is (msgspec alone would
    report a team as ``$.teams[...]``, hiding which team is wrong)."""
    try:
        return msgspec.convert(value, BusinessHours)
    except msgspec.ValidationError as exc:
        raise ValueError(f"{_CONFIG_ERROR}: {where}: {exc}") from None


class BusinessCalendar:
    """Per-team business hours; teams without an entry use `default` (None = wall-clock time).

    A lead without a team (``team=None``) also uses the default, so an organisation with one
    schedule only needs ``default``.
    """

    def __init__(
        self,
        teams: Mapping[str, BusinessHours] | None = None,
        default: BusinessHours | None = None,
    ) -> None:
        teams = dict(teams or {})
        for name, hours in teams.items():
            if not isinstance(hours, BusinessHours):
                raise TypeError(
                    f"team {name!r}: expected BusinessHours, got {type(hours).__name__}"
                )
        if default is not None and not isinstance(default, BusinessHours):
            raise TypeError(
                f"default: expected BusinessHours or None, got {type(default).__name__}"
            )
        self._teams: Mapping[str, BusinessHours] = MappingProxyType(teams)
        self._default = default

    @property
    def teams(self) -> Mapping[str, BusinessHours]:
        """Read-only: a calendar shared by stream workers must not change under them."""
        return self._teams

    @property
    def default(self) -> BusinessHours | None:
        return self._default

    def hours_for(self, team: str | None) -> BusinessHours | None:
        """The hours that apply to ``team``: its own entry, else the default, else None."""
        if team is not None:
            hours = self._teams.get(team)
            if hours is not None:
                return hours
        return self._default

    def has_hours(self, team: str | None) -> bool:
        return self.hours_for(team) is not None

    def waited(self, team: str | None, start: float, end: float) -> float:
        """Seconds a lead waited: working seconds if the team (or default) has hours, else
        wall-clock ``max(0, end - start)`` (a touch recorded before creation is not negative)."""
        hours = self.hours_for(team)
        if hours is None:
            return max(0.0, end - start)
        return hours.working_seconds(start, end)

    @classmethod
    def from_json(cls, text: str | None) -> BusinessCalendar:
        """Build from the ``SALESPULSE_BUSINESS_HOURS`` JSON; None or blank -> no hours at all.

        Fields a team leaves out take the :class:`BusinessHours` defaults, not the ``default``
        entry's values: each team entry is a complete schedule, which keeps a team's hours
        readable from its own entry. Any problem raises ValueError naming it and where it is.
        """
        if text is None or not text.strip():
            return cls()
        try:
            raw = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise ValueError(f"business hours configuration is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise ValueError(
                f"{_CONFIG_ERROR}: expected a JSON object with 'default' and/or 'teams', "
                f"got {type(raw).__name__}"
            )
        unknown = sorted(set(raw) - _CONFIG_KEYS)
        if unknown:
            raise ValueError(
                f"{_CONFIG_ERROR}: unknown key(s) {unknown}; expected 'default' and/or 'teams'"
            )
        default_raw = raw.get("default")
        default = None if default_raw is None else _hours_from(default_raw, "default")
        teams_raw = raw.get("teams")
        if teams_raw is None:
            teams_raw = {}
        if not isinstance(teams_raw, dict):
            raise ValueError(
                f"{_CONFIG_ERROR}: 'teams' must be an object of team id -> hours, "
                f"got {type(teams_raw).__name__}"
            )
        teams: dict[str, BusinessHours] = {}
        for name, value in teams_raw.items():
            if not name:
                raise ValueError(f"{_CONFIG_ERROR}: a team id in 'teams' is empty")
            teams[name] = _hours_from(value, f"team {name!r}")
        return cls(teams=teams, default=default)

    def __repr__(self) -> str:
        return f"BusinessCalendar(teams={dict(self._teams)!r}, default={self._default!r})"

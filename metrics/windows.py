"""Calendar-aligned windows in the organisation's time zone (SPEC section 4).

A window is identified by its kind and its start (epoch seconds). Boundaries are computed in
local wall time with :mod:`zoneinfo`, so a daylight-saving day is 23 or 25 hours long and a
week starts on the ISO Monday. The hot path (`bounds_all`) is cached per event-time minute:
consecutive events almost always share the minute, so window arithmetic costs one dict lookup.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

WINDOW_KINDS: tuple[str, ...] = ("minute", "hour", "day", "week", "month", "quarter")
KIND_INDEX = {kind: i for i, kind in enumerate(WINDOW_KINDS)}
#: the indices of every kind, one shared tuple (compared by identity on hot paths)
ALL_KIND_INDICES: tuple[int, ...] = tuple(range(len(WINDOW_KINDS)))

Bounds = tuple[float, float]


class Calendar:
    """Window boundaries for one time zone."""

    _CACHE_LIMIT = 4096

    def __init__(self, timezone: str = "UTC") -> None:
        self.tz = ZoneInfo(timezone)
        self.timezone = timezone
        self._cache: dict[int, tuple[Bounds, ...]] = {}

    # -- single window -------------------------------------------------------------------
    def _local(self, t: float) -> dt.datetime:
        return dt.datetime.fromtimestamp(t, self.tz)

    def _at(self, year: int, month: int, day: int, hour: int = 0) -> float:
        """Epoch seconds of a local wall-clock time.

        ``fold=0`` gives the earlier instant of an ambiguous time, and for a time skipped by a
        DST jump it gives the instant of the jump: where that local day really begins.
        """
        return dt.datetime(year, month, day, hour, tzinfo=self.tz, fold=0).timestamp()

    def bounds(self, kind: str, t: float) -> Bounds:
        """Start and end (exclusive) of the window of ``kind`` that contains ``t``."""
        if kind == "minute":
            # Every zone in use today has whole-minute offsets.
            start = t - (t % 60.0)
            return start, start + 60.0
        local = self._local(t)
        if kind == "hour":
            start = local.replace(minute=0, second=0, microsecond=0).timestamp()
            return start, start + 3600.0
        d = local.date()
        if kind == "day":
            nxt = d + dt.timedelta(days=1)
            return self._at(d.year, d.month, d.day), self._at(nxt.year, nxt.month, nxt.day)
        if kind == "week":
            monday = d - dt.timedelta(days=d.weekday())
            nxt = monday + dt.timedelta(days=7)
            return (
                self._at(monday.year, monday.month, monday.day),
                self._at(nxt.year, nxt.month, nxt.day),
            )
        if kind == "month":
            ny, nm = (d.year + 1, 1) if d.month == 12 else (d.year, d.month + 1)
            return self._at(d.year, d.month, 1), self._at(ny, nm, 1)
        if kind == "quarter":
            qm = 3 * ((d.month - 1) // 3) + 1
            ny, nm = (d.year + 1, 1) if qm == 10 else (d.year, qm + 3)
            return self._at(d.year, qm, 1), self._at(ny, nm, 1)
        raise ValueError(f"unknown window kind {kind!r}")

    # -- all kinds at once, cached ---------------------------------------------------------
    def bounds_all(self, t: float) -> tuple[Bounds, ...]:
        """Bounds of every kind in :data:`WINDOW_KINDS` order for the instant ``t``."""
        key = int(t // 60.0)
        hit = self._cache.get(key)
        if hit is None:
            if len(self._cache) >= self._CACHE_LIMIT:
                self._cache.clear()
            hit = self._cache[key] = tuple(self.bounds(k, key * 60.0) for k in WINDOW_KINDS)
        return hit

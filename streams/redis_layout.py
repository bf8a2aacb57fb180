"""The Redis key layout, shared by the Redis sink (writes) and the HTTP API (reads).

Every key starts with the app id (``P`` below), so several installations share one Redis.
Ids come last in a key, because they are free text (they may contain ``:``).

| key | type | holds | expires |
|---|---|---|---|
| ``P:kpis:<window>:<start>:<scope>:<id>`` | hash | ``scope``, ``id``, ``team`` (reps), ``window``, ``window_start``, ``window_end``, ``updated_at`` (RFC 3339), ``kpis`` (JSON, as in ``sales.metrics``) | when the window closes (end + 2 × grace) |
| ``P:lb:<window>:<start>:<kpi>`` | sorted set | rep id → value, every rep | same |
| ``P:lbt:<window>:<start>:<kpi>:<team>`` | sorted set | rep id → value, the team's reps | same |
| ``P:overdue:<partition>`` | hash | lead id → JSON (``lead_id``, ``rep_id``, ``team_id``, ``created``, ``created_time``) of the leads overdue now, per aggregate partition | 60 s after its last write (re-written every 10 s) |
| channel ``P:updates:<scope>:<window>:<id>`` | pub/sub | the hash's fields as JSON (the `sales.metrics` record) at each write | |

``<start>`` is the window's start in whole Unix seconds; ``<scope>`` is ``rep``, ``team`` or
``org`` (whose id is ``org``). Values are the same as on /metrics: a hash holds every exported
KPI of the scope in that window.
"""

from __future__ import annotations

from typing import NamedTuple

from metrics.catalog import Catalog
from metrics.windows import WINDOW_KINDS

ORG_ID = "org"
SCOPES = ("rep", "team", "org")


def ranked_kpis(catalog: Catalog) -> dict[str, tuple[str, ...]]:
    """Per window, the KPIs with leaderboards: every exported rep KPI without dimensions that
    is kept for that window."""
    return {
        window: tuple(k.name for k in catalog.kpis
                      if k.exported and "rep" in k.scopes and not catalog.dimensions_of(k.name)
                      and window in catalog.windows_of(k.name))
        for window in WINDOW_KINDS
    }


class KpiKey(NamedTuple):
    window: str
    start: int
    scope: str
    id: str


class Layout:
    def __init__(self, app_id: str) -> None:
        self.prefix = app_id

    # KPI values of a scope in a window
    def kpis(self, window: str, start: float, scope: str, scope_id: str) -> str:
        return f"{self.prefix}:kpis:{window}:{int(start)}:{scope}:{scope_id}"

    def kpis_pattern(self) -> str:
        return f"{_glob(self.prefix)}:kpis:*"

    def parse_kpis(self, key: str) -> KpiKey | None:
        head = f"{self.prefix}:kpis:"
        if not key.startswith(head):
            return None
        parts = key[len(head):].split(":", 3)
        if len(parts) != 4 or parts[0] not in WINDOW_KINDS or parts[2] not in SCOPES:
            return None
        try:
            return KpiKey(parts[0], int(parts[1]), parts[2], parts[3])
        except ValueError:
            return None

    # leaderboards
    def board(self, window: str, start: float, kpi: str, team: str | None = None) -> str:
        if team is None:
            return f"{self.prefix}:lb:{window}:{int(start)}:{kpi}"
        return f"{self.prefix}:lbt:{window}:{int(start)}:{kpi}:{team}"

    def board_patterns(self) -> tuple[str, str]:
        return f"{_glob(self.prefix)}:lb:*", f"{_glob(self.prefix)}:lbt:*"

    def parse_board(self, key: str) -> tuple[str, int, str, str | None] | None:
        """(window, start, kpi, team or None) of a leaderboard key."""
        for head, n in ((f"{self.prefix}:lb:", 3), (f"{self.prefix}:lbt:", 4)):
            if key.startswith(head):
                parts = key[len(head):].split(":", n - 1)
                if len(parts) != n or parts[0] not in WINDOW_KINDS:
                    return None
                try:
                    start = int(parts[1])
                except ValueError:
                    return None
                return parts[0], start, parts[2], parts[3] if n == 4 else None
        return None

    # overdue leads
    def overdue(self, partition: int) -> str:
        return f"{self.prefix}:overdue:{partition}"

    # updates
    def channel(self, scope: str, window: str, scope_id: str) -> str:
        return f"{self.prefix}:updates:{scope}:{window}:{scope_id}"

    def channel_pattern(self, scope: str | None = None, window: str | None = None,
                        scope_id: str | None = None) -> str:
        """A PSUBSCRIBE pattern: any of the parts left out matches everything."""
        parts = [_glob(p) if p is not None else "*" for p in (scope, window, scope_id)]
        return f"{_glob(self.prefix)}:updates:" + ":".join(parts)


def _glob(text: str) -> str:
    """``text`` matched literally in a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)

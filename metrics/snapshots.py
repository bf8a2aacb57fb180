"""Records of the `sales.metrics` topic (SPEC section 3, contract): one per (scope, id, window,
window start), JSON, described by ``docs/schema/sales-metrics.v1.json``.

Key: ``<scope>/<id>/<window>/<window start, RFC 3339>``. The value carries every exported KPI
of the scope in that window (``kpis``: name to value; a KPI with dimensions maps each dimension
value to a value, one level of object per dimension), and ``final: true`` once the window is
closed past its grace period. The organisation's id is ``org``.
"""

from __future__ import annotations

import datetime as dt
import functools
from operator import itemgetter
from typing import Any

import msgspec

from metrics.catalog import Catalog
from metrics.windows import WINDOW_KINDS, Calendar

SCHEMA_VERSION = 1
_JSON = msgspec.json.Encoder()
_KEY = itemgetter(0)


@functools.lru_cache(maxsize=4096)  # a round formats the same few window bounds, and its now
def rfc3339(t: float, tz: Any = dt.UTC) -> str:
    return dt.datetime.fromtimestamp(t, tz).isoformat().replace("+00:00", "Z")


class SnapshotFormat:
    """Builds keys and values of `sales.metrics` for one catalog and calendar."""

    def __init__(self, catalog: Catalog, calendar: Calendar) -> None:
        self.catalog = catalog
        self.tz = calendar.tz
        self._kpis = {
            k.name: (frozenset(catalog.windows_of(k.name)), len(catalog.dimensions_of(k.name)),
                     frozenset(k.scopes))
            for k in catalog.kpis if k.exported
        }
        #: (kind, scope or None) -> {exported KPI of that window and scope: its key's length}
        self._lengths: dict[tuple[int, str | None], dict[str, int]] = {}

    def key(self, scope: str, scope_id: str, kind: int, start: float) -> bytes:
        return f"{scope}/{scope_id}/{WINDOW_KINDS[kind]}/{rfc3339(start, self.tz)}".encode()

    def kpis(self, kind: int, values: dict[tuple, float], scope: str | None = None) -> dict[str, Any]:
        """``{(kpi, *dims): value}`` as the record's ``kpis`` object (exported KPIs only, of
        ``scope`` when given: eNPS never appears in a rep's record)."""
        lengths = self._lengths.get((kind, scope))
        if lengths is None:
            window = WINDOW_KINDS[kind]
            lengths = self._lengths[(kind, scope)] = {
                name: 1 + dims for name, (windows, dims, scopes) in self._kpis.items()
                if window in windows and (scope is None or scope in scopes)}
        get = lengths.get
        kept = [item for item in values.items() if get(item[0][0]) == len(item[0])]
        # In the order of the keys as strings (dimension values are strings but for the odd
        # user KPI): sorting by the keys themselves is that order (and tuples whose first
        # items are all strings sort fastest).
        if all(type(d) is str for key, _ in kept if len(key) > 1 for d in key):
            kept.sort(key=_KEY)
        else:
            kept.sort(key=lambda kv: tuple(map(str, kv[0])))
        out: dict[str, Any] = {}
        for key, v in kept:
            if len(key) == 1:
                out[key[0]] = v
                continue
            node = out.setdefault(key[0], {})
            for dim in key[1:-1]:
                node = node.setdefault(str(dim), {})
            node[str(key[-1])] = v
        return out

    def value(self, scope: str, scope_id: str, team: str | None, kind: int, start: float,
              end: float, values: dict[tuple, float], *, final: bool, now: float) -> bytes:
        record: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "scope": scope,
            "id": scope_id,
        }
        if scope == "rep":
            record["team"] = team
        record.update({
            "window": WINDOW_KINDS[kind],
            "window_start": rfc3339(start, self.tz),
            "window_end": rfc3339(end, self.tz),
            "final": final,
            "updated_at": rfc3339(now),
            "kpis": self.kpis(kind, values, scope),
        })
        return _JSON.encode(record)


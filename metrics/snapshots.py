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
from typing import Any

import msgspec

from metrics.catalog import Catalog
from metrics.windows import WINDOW_KINDS, Calendar

SCHEMA_VERSION = 1
_JSON = msgspec.json.Encoder()


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

    def key(self, scope: str, scope_id: str, kind: int, start: float) -> bytes:
        return f"{scope}/{scope_id}/{WINDOW_KINDS[kind]}/{rfc3339(start, self.tz)}".encode()

    def kpis(self, kind: int, values: dict[tuple, float], scope: str | None = None) -> dict[str, Any]:
        """``{(kpi, *dims): value}`` as the record's ``kpis`` object (exported KPIs only, of
        ``scope`` when given: eNPS never appears in a rep's record)."""
        window = WINDOW_KINDS[kind]
        specs = self._kpis
        kept = []
        for key, v in values.items():
            spec = specs.get(key[0])
            if spec is None or window not in spec[0] or len(key) != 1 + spec[1]:
                continue
            if scope is not None and scope not in spec[2]:
                continue
            kept.append((key, v))
        # In the order of the keys as strings (dimension values are strings but for the odd
        # user KPI): sorting the keys themselves is that order, without a key function.
        if all(type(d) is str for key, _ in kept for d in key):
            kept.sort()
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


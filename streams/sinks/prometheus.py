"""`GET /metrics`, the KPI families: rendered from the readout at scrape time.

No client object is touched per event. At each scrape the renderer takes the current window of
every kind (by the wall clock, in the organisation's time zone) from the readout
(:mod:`streams.readout`: the finished rep, team and organisation values of the scopes this
worker owns) and emits one family per KPI and scope, named ``salespulse_<scope>_<kpi>`` (SPEC
section 3). Across the workers of a group each series is exported by exactly one of them;
after a rebalance a worker stops exporting what it gave away. The service's own counters are
:mod:`streams.exposition`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from metrics.catalog import Catalog
from metrics.windows import WINDOW_KINDS, Calendar

SCOPE_LABELS = {"rep": ("rep", "team"), "team": ("team",), "org": ()}


def _escape(value: str) -> str:
    """A label value in the text exposition format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class KpiRenderer:
    """Windowed KPI families, per scope, rendered straight to the text exposition format.

    A scrape of 1,000 reps has ~150,000 series. Building a client ``Metric`` and ``Sample``
    object per series took seconds on the event loop that also processes events; here each
    series is one f-string, with escaped label fragments cached per id.
    """

    def __init__(
        self,
        catalog: Catalog,
        calendar: Calendar,
        scopes: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.calendar = calendar
        self.scopes = scopes  # the readout: values(scope, kind, start) of what this worker owns
        self._stored = frozenset(k.name for k in catalog.stored)
        self.clock = clock
        self._labels: dict[tuple, str] = {}
        self.families: dict[tuple[str, str], str] = {}  # (scope, kpi) -> metric name
        self.windows_of: dict[str, frozenset[str]] = {}
        for kpi in catalog.kpis:
            self.windows_of[kpi.name] = frozenset(catalog.windows_of(kpi.name))
            if kpi.exported:
                for scope in kpi.scopes:
                    self.families[(scope, kpi.name)] = f"salespulse_{scope}_{kpi.name}"
        self._dims = {k.name: catalog.dimensions_of(k.name) for k in catalog.kpis}

    def _fragment(self, names: tuple[str, ...], values: tuple) -> str:
        """'a="x",b="y",' for label names and values, cached."""
        key = (names, values)
        hit = self._labels.get(key)
        if hit is None:
            if len(self._labels) > 200_000:
                self._labels.clear()
            hit = self._labels[key] = "".join(
                f'{n}="{_escape(str(v))}",' for n, v in zip(names, values, strict=True)
            )
        return hit

    def capture(self) -> list[dict[str, tuple[dict, dict]]]:
        """What a render reads: per window kind, each scope's values of the current and the
        previous window, from the readout. Runs on the event loop; the value dicts are
        the stage's finished ones, replaced and never changed in place, so a render may read
        them in a thread."""
        now = self.clock()
        windows = []
        for kind_index, kind in enumerate(WINDOW_KINDS):
            start, _ = self.calendar.bounds(kind, now)
            prev_start, _ = self.calendar.bounds(kind, start - 1.0)
            windows.append({
                scope: (self.scopes.values(scope, kind_index, start),
                        self.scopes.values(scope, kind_index, prev_start))
                for scope in SCOPE_LABELS
            })
        return windows

    def render(self, captured: list[dict[str, tuple[dict, dict]]] | None = None) -> str:
        """The KPI families as exposition text. Given a :meth:`capture`, it touches no live
        state and may run off the event loop (in a thread)."""
        windows = captured if captured is not None else self.capture()
        lines: dict[tuple[str, str], list[str]] = {fam: [] for fam in self.families}
        fragment = self._fragment
        for kind, scopes in zip(WINDOW_KINDS, windows, strict=True):
            window = f'window="{kind}"'
            for scope, names in SCOPE_LABELS.items():
                width = len(names)
                for key, value in self._scoped(*scopes[scope]).items():
                    kpi = key[0]
                    out = lines.get((scope, kpi))
                    if out is None or kind not in self.windows_of[kpi]:
                        continue
                    ids = key[1 : 1 + width]
                    dims = key[1 + width :]
                    head = fragment(names, ids)
                    tail = "," + fragment(self._dims[kpi], dims)[:-1] if dims else ""
                    out.append(f"{{{head}{window}{tail}}} {value!r}\n")
        parts = []
        for (scope, kpi), body in lines.items():
            name = self.families[(scope, kpi)]
            help_text = self.catalog.by_name[kpi].help.replace("\\", "\\\\").replace("\n", "\\n")
            parts.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
            parts.extend(name + line for line in body)
        return "".join(parts)


    def _scoped(self, current: dict[tuple, dict], previous: dict[tuple, dict]) -> dict[tuple, float]:
        """{labels: {(kpi, *dims): v}} as {(kpi, *labels, *dims): v}, with the stored KPIs of
        the previous window at 0 where the current window has none yet: a gauge drops to the
        new window's value at the boundary even when no event arrives."""
        out: dict[tuple, float] = {}
        stored = self._stored
        for ids, values in previous.items():
            out.update(((k[0], *ids, *k[1:]), 0.0) for k in values if k[0] in stored)
        for ids, values in current.items():
            out.update(((k[0], *ids, *k[1:]), v) for k, v in values.items())
        return out

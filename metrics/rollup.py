"""From stored sums to KPI values per scope (rep, team, organisation) for one window.

Team and organisation values are sums of their parts across every partition, and ratios are
computed per scope from those sums (SPEC section 3): never an average of rep ratios. The
window shown is the current one by the wall clock; series seen in the previous window of the
same kind stay visible with value 0, so a gauge drops to the new window's value at the boundary
even when no event arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from ddsketch import DDSketch

from metrics.catalog import Catalog
from metrics.leads import UNASSIGNED

#: Relative accuracy of quantiles: a p90 of 600 s is reported within 594–606 s.
SKETCH_ACCURACY = 0.01

# rep key: (kpi, rep, team, *dims); team key: (kpi, team, *dims); org key: (kpi, *dims)
Values = dict[tuple, float]


@dataclass
class ScopeValues:
    """KPI values of one window, per scope. Keys start with the KPI name."""

    rep: Values = field(default_factory=dict)
    team: Values = field(default_factory=dict)
    org: Values = field(default_factory=dict)


def rollup(
    catalog: Catalog,
    current: Iterable[Mapping[tuple, float]],
    previous: Iterable[Mapping[tuple, float]] = (),
    samples: Iterable[Mapping[tuple, list[float]]] = (),
    team_of: Callable[[str | None], str] = lambda rep: UNASSIGNED,
) -> ScopeValues:
    """Sum stored KPIs of the current window into the three scopes and derive ratios.

    ``current`` and ``previous`` hold one mapping per partition, keyed (kpi, rep, team, *dims);
    ``samples`` one mapping per partition of sample series keyed (series, rep, team), from
    which quantile and mean KPIs are computed. A key whose team is None (the event named
    none) takes the rep's team from ``team_of`` (the roster).
    """
    out = ScopeValues()
    rep_v, team_v, org_v = out.rep, out.team, out.org
    for values in previous:
        for key in values:
            kpi, rep, team, *dims = key
            if team is None:
                team = team_of(rep)
                key = (kpi, rep, team, *dims)
            if rep is not None:
                rep_v[key] = 0.0
            team_v[(kpi, team, *dims)] = 0.0
            org_v[(kpi, *dims)] = 0.0
    for values in current:
        for key, v in values.items():
            kpi, rep, team, *dims = key
            if team is None:
                team = team_of(rep)
                key = (kpi, rep, team, *dims)
            if rep is not None:
                rep_v[key] = rep_v.get(key, 0.0) + v
            tk = (kpi, team, *dims)
            team_v[tk] = team_v.get(tk, 0.0) + v
            ok = (kpi, *dims)
            org_v[ok] = org_v.get(ok, 0.0) + v
    ratios = []
    for kpi in catalog.derived:
        num = catalog.by_name[kpi.numerator]  # type: ignore[index]
        den = catalog.by_name[kpi.denominator]  # type: ignore[index]
        ratios.append((kpi.name, num.name, den.name, len(num.dimensions) - len(den.dimensions)))
    for scope in (rep_v, team_v, org_v):
        _derive(scope, ratios)
    sampled = catalog.sampled
    if sampled:
        _summarise(out, sampled, samples)
    return out


def _summarise(out: ScopeValues, kpis: tuple, samples: Iterable[Mapping[tuple, list[float]]]) -> None:
    """Quantiles and means of sample series, per scope.

    A rep's quantiles are exact (its few values, sorted, at DDSketch's rank convention
    ``q·(n−1)``). Teams and the organisation have one DDSketch each, fed every value of their
    reps: the same buckets as merging per-rep sketches, without building and merging one per rep.
    Means are exact at every scope.
    """
    series_wanted = {k.series for k in kpis}
    reps: dict[tuple, list[float]] = {}
    sketches: dict[str, dict[tuple, DDSketch]] = {"team": {}, "org": {}}
    for part in samples:
        for (series, rep, team), values in part.items():
            if series not in series_wanted or not values:
                continue
            if rep is not None:
                reps.setdefault((series, rep, team), []).extend(values)
            for scope, key in (("team", (series, team)), ("org", (series,))):
                sketch = sketches[scope].get(key)
                if sketch is None:
                    sketch = sketches[scope][key] = DDSketch(relative_accuracy=SKETCH_ACCURACY)
                for v in values:
                    sketch.add(v)
    for (series, *rest), values in reps.items():
        values.sort()
        n = len(values)
        for kpi in kpis:
            if kpi.series != series:
                continue
            if kpi.aggregation == "mean":
                out.rep[(kpi.name, *rest)] = sum(values) / n
            else:
                out.rep[(kpi.name, *rest)] = values[int(kpi.quantile * (n - 1))]
    for scope, target in (("team", out.team), ("org", out.org)):
        for (series, *rest), sketch in sketches[scope].items():
            for kpi in kpis:
                if kpi.series != series:
                    continue
                if kpi.aggregation == "mean":
                    target[(kpi.name, *rest)] = sketch.sum / sketch.count
                else:
                    target[(kpi.name, *rest)] = sketch.get_quantile_value(kpi.quantile)


def _derive(values: Values, ratios: list[tuple[str, str, str, int]]) -> None:
    """Add every ratio KPI (name, numerator, denominator, extra) in one pass over ``values``.

    A ratio is numerator / denominator wherever the denominator is non-zero. ``extra`` is how
    many dimensions the numerator has beyond the denominator's (lost leads by reason / leads
    closed: 1); each numerator key is then divided by its scope's denominator.
    """
    by_den: dict[str, list[tuple[str, str]]] = {}
    by_num: dict[str, list[tuple[str, str, int]]] = {}
    for name, num, den, extra in ratios:
        if extra:
            by_num.setdefault(num, []).append((name, den, extra))
        else:
            by_den.setdefault(den, []).append((name, num))
    out = {}
    get = values.get
    for key, v in values.items():
        kpi = key[0]
        if kpi in by_den and v:
            rest = key[1:]
            for name, num in by_den[kpi]:
                out[(name, *rest)] = get((num, *rest), 0.0) / v
        if kpi in by_num:
            for name, den, extra in by_num[kpi]:
                d = get((den, *key[1:-extra]))
                if d:
                    out[(name, *key[1:])] = v / d
    values.update(out)

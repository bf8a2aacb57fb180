"""From stored sums to KPI values per scope (rep, team, organisation) for one window.

Team and organisation values are sums of their parts across every partition, and ratios are
computed per scope from those sums (SPEC section 3): never an average of rep ratios. The
window shown is the current one by the wall clock; series seen in the previous window of the
same kind stay visible with value 0, so a gauge drops to the new window's value at the boundary
even when no event arrives.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ddsketch import DDSketch

from metrics.catalog import Catalog

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
) -> ScopeValues:
    """Sum stored KPIs of the current window into the three scopes and derive ratios.

    ``current`` and ``previous`` hold one mapping per partition, keyed (kpi, rep, team, *dims);
    ``samples`` one mapping per partition of sample series keyed (series, rep, team), from
    which quantile and mean KPIs are computed: a DDSketch per rep, merged for team and org.
    """
    out = ScopeValues()
    rep_v, team_v, org_v = out.rep, out.team, out.org
    for values in previous:
        for key in values:
            kpi, rep, team, *dims = key
            if rep is not None:
                rep_v[key] = 0.0
            team_v[(kpi, team, *dims)] = 0.0
            org_v[(kpi, *dims)] = 0.0
    for values in current:
        for key, v in values.items():
            kpi, rep, team, *dims = key
            if rep is not None:
                rep_v[key] = rep_v.get(key, 0.0) + v
            tk = (kpi, team, *dims)
            team_v[tk] = team_v.get(tk, 0.0) + v
            ok = (kpi, *dims)
            org_v[ok] = org_v.get(ok, 0.0) + v
    for kpi in catalog.derived:
        num = catalog.by_name[kpi.numerator]  # type: ignore[index]
        den = catalog.by_name[kpi.denominator]  # type: ignore[index]
        extra = len(num.dimensions) - len(den.dimensions)
        for scope in (rep_v, team_v, org_v):
            _derive(scope, kpi.name, num.name, den.name, extra)
    sampled = catalog.sampled
    if sampled:
        _summarise(out, sampled, samples)
    return out


def _summarise(out: ScopeValues, kpis: tuple, samples: Iterable[Mapping[tuple, list[float]]]) -> None:
    """Quantiles (from merged DDSketches) and means of sample series, per scope."""
    sketches: dict[str, dict[tuple, DDSketch]] = {"rep": {}, "team": {}, "org": {}}
    series_wanted = {k.series for k in kpis}
    for part in samples:
        for (series, rep, team), values in part.items():
            if series not in series_wanted or not values:
                continue
            sketch = DDSketch(relative_accuracy=SKETCH_ACCURACY)
            for v in values:
                sketch.add(v)
            for scope, key in (("rep", (series, rep, team)), ("team", (series, team)), ("org", (series,))):
                if scope == "rep" and rep is None:
                    continue
                have = sketches[scope].get(key)
                if have is None:
                    sketches[scope][key] = copy_sketch(sketch)
                else:
                    have.merge(sketch)
    for scope, target in (("rep", out.rep), ("team", out.team), ("org", out.org)):
        for key, sketch in sketches[scope].items():
            series, rest = key[0], key[1:]
            for kpi in kpis:
                if kpi.series != series:
                    continue
                if kpi.aggregation == "mean":
                    target[(kpi.name, *rest)] = sketch.sum / sketch.count
                else:
                    target[(kpi.name, *rest)] = sketch.get_quantile_value(kpi.quantile)


def copy_sketch(sketch: DDSketch) -> DDSketch:
    fresh = DDSketch(relative_accuracy=SKETCH_ACCURACY)
    fresh.merge(sketch)
    return fresh


def _derive(values: Values, name: str, numerator: str, denominator: str, extra: int) -> None:
    """Add ``name`` = numerator / denominator wherever the denominator is non-zero.

    ``extra`` is how many dimensions the numerator has beyond the denominator's (lost leads by
    reason / leads closed: 1); each numerator key is then divided by its scope's denominator.
    """
    ratios = {}
    if not extra:
        for key, den in values.items():
            if key[0] == denominator and den:
                ratios[(name, *key[1:])] = values.get((numerator, *key[1:]), 0.0) / den
    else:
        for key, num in values.items():
            if key[0] == numerator:
                den = values.get((denominator, *key[1:-extra]))
                if den:
                    ratios[(name, *key[1:])] = num / den
    values.update(ratios)

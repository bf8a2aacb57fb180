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

from metrics.catalog import Catalog

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
) -> ScopeValues:
    """Sum stored KPIs of the current window into the three scopes and derive ratios.

    ``current`` and ``previous`` hold one mapping per partition, keyed (kpi, rep, team, *dims).
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
        for scope in (rep_v, team_v, org_v):
            _derive(scope, kpi.name, kpi.numerator, kpi.denominator)  # type: ignore[arg-type]
    return out


def _derive(values: Values, name: str, numerator: str, denominator: str) -> None:
    """Add ``name`` = numerator / denominator for every key whose denominator is non-zero."""
    ratios = {}
    for key, den in values.items():
        if key[0] != denominator or not den:
            continue
        rest = key[1:]
        ratios[(name, *rest)] = values.get((numerator, *rest), 0.0) / den
    values.update(ratios)

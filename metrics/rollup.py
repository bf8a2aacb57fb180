"""From stored sums to KPI values per scope (rep, team, organisation), in three steps.

1. :func:`split` turns one partition's window (sums keyed (kpi, rep, team, *dims) and sample
   series keyed (series, rep, team)) into mergeable :class:`Parts` per rep, per team and for
   the organisation: sums, and for sample series the raw values (reps) or a sketch (teams,
   organisation).
2. :func:`merge` adds the parts of one scope from several partitions (or workers): sums of
   sums, merged sketches. The roll-up stage does this across workers.
3. :func:`finish` derives the KPI values of a scope from its parts: stored sums as they are,
   ratios from the summed parts (never an average of rep ratios), quantiles from the merged
   sketch (exact from the raw values for a rep), means from exact sums and counts.

:func:`rollup` runs the three steps over whole windows; the exposition shows the current
window, where series seen in the previous window of the same kind stay visible with value 0,
so a gauge drops to the new window's value at the boundary even when no event arrives.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from operator import itemgetter

from metrics.catalog import STORED, Catalog
from metrics.extremes import combine, is_extreme
from metrics.extremes import parse as parse_extreme
from metrics.leads import UNASSIGNED
from metrics.sketch import SKETCH_ACCURACY, Sketch

__all__ = ["RESTS", "SKETCH_ACCURACY", "Parts", "ScopeValues", "finish", "finish_sums", "merge",
           "merge_pairs", "new_rest", "rollup", "split"]

# rep key: (kpi, rep, team, *dims); team key: (kpi, team, *dims); org key: (kpi, *dims)
Values = dict[tuple, float]


@dataclass(slots=True)  # one per scope, window and source, held by every roll-up window: no
class Parts:              # __dict__ each (memory, and one object less for the collector)
    """The mergeable parts of one scope's KPIs in one window."""

    sums: dict[tuple, float] = field(default_factory=dict)  # (kpi, *dims) -> sum
    samples: dict[str, list[float]] = field(default_factory=dict)  # rep scope: raw values
    sketches: dict[str, Sketch] = field(default_factory=dict)  # team, org scope


@dataclass
class ScopeValues:
    """KPI values of one window, per scope. Keys start with the KPI name."""

    rep: Values = field(default_factory=dict)
    team: Values = field(default_factory=dict)
    org: Values = field(default_factory=dict)


#: key (kpi, rep, team, *dims) -> its (kpi, *dims): one tuple per distinct key for every part
#: that holds it (the state shares its key tuples across windows; the publisher's split indexes
#: keep the parts of every rep and window), made once; emptied past :data:`RESTS_MAX` (only
#: the sharing is lost).
RESTS: dict[tuple, tuple] = {}
RESTS_MAX = 500_000


def new_rest(key: tuple) -> tuple:
    """``key``'s (kpi, *dims), made and entered in :data:`RESTS` (not found there)."""
    if len(RESTS) >= RESTS_MAX:
        RESTS.clear()
    rest = RESTS[key] = (key[0], *key[3:])
    return rest


def split(
    values: Mapping[tuple, float],
    samples: Mapping[tuple, list[float]] = {},  # noqa: B006 - read only
    team_of: Callable[[str | None], str] = lambda rep: UNASSIGNED,
) -> tuple[dict[tuple[str, str], Parts], dict[str, Parts], Parts]:
    """One partition's window as parts per (rep, team), per team and for the organisation.

    A key whose team is None (the event named none) takes the rep's team from ``team_of``
    (the roster). Keys without a rep (a lead with no owner) count for the team and org only.
    """
    reps: dict[tuple[str, str], Parts] = {}
    teams: dict[str, Parts] = {}
    org = Parts()
    org_sums = org.sums
    rests = RESTS
    for key, v in values.items():
        rest = rests.get(key)  # shared, and cheaper than unpacking the key
        if rest is None:
            rest = new_rest(key)
        rep, team = key[1], key[2]
        if team is None:
            team = team_of(rep)
        if rep is not None:
            rp = reps.get((rep, team))
            if rp is None:
                rp = reps[(rep, team)] = Parts()
            rp.sums[rest] = rp.sums.get(rest, 0.0) + v
        tp = teams.get(team)
        if tp is None:
            tp = teams[team] = Parts()
        tp.sums[rest] = tp.sums.get(rest, 0.0) + v
        org_sums[rest] = org_sums.get(rest, 0.0) + v
    for (series, rep, team), obs in samples.items():
        if not obs:
            continue
        if team is None:
            team = team_of(rep)
        tp = teams.get(team)
        if tp is None:
            tp = teams[team] = Parts()
        if is_extreme(series):  # min, max, last: combined by their operation at every scope
            scopes = [tp, org]
            if rep is not None:
                rp = reps.get((rep, team))
                if rp is None:
                    rp = reps[(rep, team)] = Parts()
                scopes.append(rp)
            for scope in scopes:
                scope.samples[series] = combine(series, scope.samples.get(series), obs)
            continue
        if rep is not None:
            rp = reps.get((rep, team))
            if rp is None:
                rp = reps[(rep, team)] = Parts()
            rp.samples.setdefault(series, []).extend(obs)
        for scope in (tp, org):
            sketch = scope.sketches.get(series)
            if sketch is None:
                sketch = scope.sketches[series] = Sketch()
            sketch.extend(obs)
    return reps, teams, org


def merge(parts: Iterable[Parts]) -> Parts:
    """The parts of one scope from several sources, added up (the inputs are not changed)."""
    return merge_pairs((p.sums.items(), p.samples, p.sketches) for p in parts)


def merge_pairs(parts: Iterable[tuple[Iterable[tuple[tuple, float]], Mapping[str, list[float]],
                                      Mapping[str, Sketch]]]) -> Parts:
    """:func:`merge` of parts given as (their sums' (key, value) pairs, samples, sketches):
    parts held in another form (``metrics.partials.Held``) are merged without a dict each."""
    out = Parts()
    sums = out.sums
    get = sums.get
    for pairs, samples, sketches in parts:
        for key, v in pairs:
            sums[key] = get(key, 0.0) + v
        for series, obs in samples.items():
            if is_extreme(series):
                out.samples[series] = combine(series, out.samples.get(series), obs)
            else:
                out.samples.setdefault(series, []).extend(obs)
        for series, sketch in sketches.items():
            mine = out.sketches.get(series)
            if mine is None:
                mine = out.sketches[series] = Sketch()
            mine.merge(sketch)
    return out


@lru_cache(maxsize=16)  # per catalog (hashed by identity): finish() runs per window and change
def _ratios(catalog: Catalog) -> tuple[tuple[str, str, str, int], ...]:
    out = []
    for kpi in catalog.derived:
        num = catalog.by_name[kpi.numerator]  # type: ignore[index]
        den = catalog.by_name[kpi.denominator]  # type: ignore[index]
        out.append((kpi.name, num.name, den.name, len(num.dimensions) - len(den.dimensions)))
    return tuple(out)


@lru_cache(maxsize=16)  # per catalog (hashed by identity): finish() runs per window and change
def _plan(catalog: Catalog) -> tuple[tuple[str, ...], tuple[tuple[tuple, str, bool, float], ...],
                                     tuple[tuple[str, tuple[str, ...], Callable, bool], ...]]:
    """What :func:`finish` derives, read from the catalog once: the distinct counts; the
    sampled KPIs (key, series, whether a mean, quantile); the expressions (name, the names
    they read, evaluator, whether the first name is stored: then only a scope with keys of
    it at the start has any)."""
    distinct = tuple(k.name for k in catalog.distinct)
    sampled = tuple(((k.name,), catalog.series_of(k), k.aggregation == "mean", k.quantile or 0.0)
                    for k in catalog.sampled)
    expressions = tuple(
        (name, names, evaluate, catalog.by_name[names[0]].aggregation in STORED)
        for name, (names, evaluate) in catalog.expressions.items())
    return distinct, sampled, expressions


_FIRST = itemgetter(0)


def finish(catalog: Catalog, parts: Parts) -> Values:
    """A scope's KPI values keyed (kpi, *dims): sums, ratios of sums, quantiles and means."""
    return finish_sums(catalog, dict(parts.sums), parts.samples, parts.sketches)


def finish_sums(catalog: Catalog, values: Values, samples: Mapping[str, list[float]],
                sketches: Mapping[str, Sketch]) -> Values:
    """:func:`finish` of parts given apart, their sums a dict the caller gives away (made for
    this call and not read after it): it becomes the values, not copied."""
    distinct, sampled, expressions = _plan(catalog)
    names = set(map(_FIRST, values))  # the KPIs with keys at the start (in C)
    for name in distinct:
        if name in names:
            _distinct(values, name)
    _derive(values, _ratios(catalog))
    for key, series, mean, quantile in sampled:  # (the key made once, shared by every window)
        raw = samples.get(series)
        if raw:
            if mean:
                values[key] = sum(raw) / len(raw)
            else:
                ordered = sorted(raw)
                values[key] = ordered[int(quantile * (len(ordered) - 1))]
            continue
        sketch = sketches.get(series)
        if sketch is None or not sketch.count:
            continue
        if mean:
            values[key] = sketch.sum / sketch.count
        else:
            values[key] = sketch.quantile(quantile)  # type: ignore[assignment]
    for series, obs in samples.items():
        if obs and is_extreme(series):
            _, kpi, dims = parse_extreme(series)
            values[(kpi, *dims)] = obs[-1]
    for name, reads, evaluate, stored in expressions:
        if stored and reads[0] not in names:
            continue  # no key of its first KPI: nothing to evaluate
        _evaluate(values, name, reads, evaluate)
    return values


def _distinct(values: Values, name: str) -> None:
    """A distinct count: the number of values seen, in place of the per-value keys
    ``(name, value)`` (sums of partitions: a value seen in two partitions is one value)."""
    keys = [k for k in values if k[0] == name]
    n = 0
    for k in keys:
        if values.pop(k) > 0:
            n += 1
    if n:
        values[(name,)] = float(n)


def _evaluate(values: Values, name: str, names: tuple[str, ...],
              evaluate: Callable[[Callable[[str], float | None]], float | None]) -> None:
    """An expression KPI, per dimension values of the first KPI it names."""
    first = names[0]
    for dims in [k[1:] for k in values if k[0] == first]:
        v = evaluate(lambda n, dims=dims: values.get((n, *dims)))
        if v is not None:
            values[(name, *dims)] = v


def rollup(
    catalog: Catalog,
    current: Iterable[Mapping[tuple, float]],
    previous: Iterable[Mapping[tuple, float]] = (),
    samples: Iterable[Mapping[tuple, list[float]]] = (),
    team_of: Callable[[str | None], str] = lambda rep: UNASSIGNED,
) -> ScopeValues:
    """Values of the current window per scope from every partition's sums and samples, with
    the series of the previous window at 0 (see the module docstring)."""
    reps: dict[tuple[str, str], list[Parts]] = {}
    teams: dict[str, list[Parts]] = {}
    orgs: list[Parts] = []
    for values, obs in _pad(list(current), list(samples)):
        r, t, o = split(values, obs, team_of)
        for key, p in r.items():
            reps.setdefault(key, []).append(p)
        for key, p in t.items():
            teams.setdefault(key, []).append(p)
        orgs.append(o)
    out = ScopeValues()
    for values in previous:
        r, t, o = split(values, {}, team_of)
        for (rep, team), p in r.items():
            out.rep.update(((k[0], rep, team, *k[1:]), 0.0) for k in p.sums)
        for team, p in t.items():
            out.team.update(((k[0], team, *k[1:]), 0.0) for k in p.sums)
        out.org.update((k, 0.0) for k in o.sums)
    for (rep, team), ps in reps.items():
        out.rep.update(((k[0], rep, team, *k[1:]), v) for k, v in finish(catalog, merge(ps)).items())
    for team, ps in teams.items():
        out.team.update(((k[0], team, *k[1:]), v) for k, v in finish(catalog, merge(ps)).items())
    if orgs:
        out.org.update(finish(catalog, merge(orgs)))
    return out


def _pad(current: list, samples: list) -> list[tuple[Mapping, Mapping]]:
    n = max(len(current), len(samples))
    return [
        (current[i] if i < len(current) else {}, samples[i] if i < len(samples) else {})
        for i in range(n)
    ]


@lru_cache(maxsize=16)  # per catalog's ratios: _derive runs per window and change
def _ratio_plan(ratios: tuple[tuple[str, str, str, int], ...]) -> tuple[
        dict[str, list[tuple[str, str, tuple, tuple]]], dict[str, list[tuple[str, str, int]]]]:
    """The ratios by denominator (same dimensions) and by numerator (more dimensions)."""
    by_den: dict[str, list[tuple[str, str, tuple, tuple]]] = {}
    by_num: dict[str, list[tuple[str, str, int]]] = {}
    for name, num, den, extra in ratios:
        if extra:
            by_num.setdefault(num, []).append((name, den, extra))
        else:  # with the keys of a scope without dimensions (most), made once
            by_den.setdefault(den, []).append((name, num, (name,), (num,)))
    return by_den, by_num


def _derive(values: Values, ratios: tuple[tuple[str, str, str, int], ...]) -> None:
    """Add every ratio KPI (name, numerator, denominator, extra) in one pass over ``values``.

    A ratio is numerator / denominator wherever the denominator is non-zero. ``extra`` is how
    many dimensions the numerator has beyond the denominator's (lost leads by reason / leads
    closed: 1); each numerator key is then divided by its scope's denominator.
    """
    by_den, by_num = _ratio_plan(ratios)
    out = {}
    get = values.get
    for key, v in values.items():
        kpi = key[0]
        if kpi in by_den and v:
            rest = key[1:]
            if rest:
                for name, num, _, _ in by_den[kpi]:
                    out[(name, *rest)] = get((num, *rest), 0.0) / v
            else:
                for _, _, name_key, num_key in by_den[kpi]:
                    out[name_key] = get(num_key, 0.0) / v
        if kpi in by_num:
            for name, den, extra in by_num[kpi]:
                d = get((den, *key[1:-extra]))
                if d:
                    out[(name, *key[1:])] = v / d
    values.update(out)

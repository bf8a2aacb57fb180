"""``min``, ``max`` and ``last`` of a numeric field per window (catalog entries with those
aggregations, e.g. the latest observed competitor price per competitor and product).

They are not sums, so they are not kept with the window sums: each observation is filed by the
state (a hook, like sampled fields) into the window's samples under a series that names the
operation, the KPI and its dimension values (``~last\\x1fcompetitor_price\\x1facme\\x1fpro``), with
the running result: ``[value]`` for min and max, ``[event time, value]`` for last. Results of
several partitions or reps combine by the same operation (:func:`combine`), never by adding,
and ``last`` is decided by event time (a tie by the larger value), so arrival order does not
matter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from metrics.opportunities import file_samples

if TYPE_CHECKING:  # pragma: no cover
    from metrics.state import PartitionState

MARK = "~"
SEP = "\x1f"
OPS = ("min", "max", "last")


def series_name(op: str, kpi: str, dims: tuple[str, ...]) -> str:
    return SEP.join((f"{MARK}{op}", kpi, *dims))


def is_extreme(series: str) -> bool:
    return series.startswith(MARK)


def parse(series: str) -> tuple[str, str, tuple[str, ...]]:
    """(op, kpi, dims) of a series name."""
    op, kpi, *dims = series.split(SEP)
    return op[len(MARK):], kpi, tuple(dims)


def combine(series: str, a: list[float] | None, b: list[float]) -> list[float]:
    """The running result of ``a`` and ``b`` (a new list; ``a`` may be None)."""
    if not a:
        return list(b)
    if not b:
        return list(a)
    op = series[len(MARK):series.index(SEP)]
    if op == "min":
        return [min(a[0], b[0])]
    if op == "max":
        return [max(a[0], b[0])]
    return list(max((a[0], a[1]), (b[0], b[1])))  # last: latest time, then larger value


def file_extremes(state: PartitionState, extremes: tuple[Any, ...], data: Any, t: float,
                  rep: str | None, team: str | None, offset: int, replaying: bool,
                  src_wm: float) -> None:
    """File one event's observations (hits of ``extremes``: compiled catalog entries)."""
    admit = state._admit
    hits = []
    for x in extremes:
        if not x.match(data):
            continue
        value = getattr(data, x.field, None)
        if value is None:
            continue
        dims = x.dims(data, admit)
        obs = [t, float(value)] if x.op == "last" else [float(value)]
        hits.append((series_name(x.op, x.kpi, dims), obs, x.kinds))
    if not hits:
        return

    def update(samples: dict, who: tuple, kind: int) -> None:
        for series, obs, kinds in hits:
            if kind in kinds:
                key = (series, *who)
                samples[key] = combine(series, samples.get(key), obs)

    file_samples(state, t, rep, team, offset, replaying, src_wm, update)

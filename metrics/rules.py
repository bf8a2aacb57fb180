"""Catalog entries compiled to Python, each KPI's rule written once.

A stored KPI's rule is three expressions over an event's data ``d``: the condition under which
an event counts (its ``where``; for a ``distinct``, also that the counted field is set), the
value it adds, and the dimension values of its key. Each is written here once, as Python source
(:func:`conditions`, :func:`value`, :func:`key_dims`), and compiled into every function that
reads the rule:

* :func:`accumulator`: one function per event type adding all its KPI hits to a bucket, with
  the conditions inlined. The aggregate state runs it on its fast path and on its replay path
  alike (``metrics.state``), so both give the same hits and admit the same dimension values;
* :func:`rule_functions`: ``match``, ``value`` and ``dims`` of one entry, for what the state
  does per entry besides the sums (sampled fields, extremes, computed values: ``metrics.extras``).

Field names are checked against the event structs before anything is compiled (the catalog's
``_check_fields``), so the source reads attributes directly; every literal is passed in the
namespace, never pasted into the source.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgspec

from metrics.labels import same


class Present(msgspec.Struct, frozen=True):
    """Condition: the field is set (not null)."""


PRESENT = Present()


class Source:
    """Generated functions: their source lines, and the namespace holding their constants."""

    def __init__(self) -> None:
        self.ns: dict[str, Any] = {"_same": same}
        self.lines: list[str] = []

    def const(self, value: Any) -> str:
        """A name for ``value`` in the generated code."""
        name = f"_c{len(self.ns)}"
        self.ns[name] = value
        return name

    def compile(self) -> dict[str, Any]:
        """Run the source; the namespace with its functions."""
        code = compile("\n".join(self.lines), "<catalog>", "exec")
        exec(code, self.ns)  # noqa: S102 - generated from checked catalog data
        return self.ns


def conditions(src: Source, kpi: Any) -> list[str]:
    """The conditions under which an event counts for ``kpi`` (all must hold)."""
    out = []
    for f, expected in kpi.where.items():
        if isinstance(expected, Present):
            out.append(f"d.{f} is not None")
        elif isinstance(expected, (list, tuple, set, frozenset)):
            out.append(f"d.{f} in {src.const(frozenset(expected))}")
        else:
            out.append(f"d.{f} == {src.const(expected)}")
    if kpi.aggregation == "distinct":
        out.append(f"d.{kpi.fields[0]} is not None")
    return out


def value(kpi: Any) -> str:
    """What an event that counts adds: 1 (a count, a distinct value's key), else its fields."""
    if kpi.aggregation in ("count", "distinct"):
        return "1.0"
    return " + ".join(f"(d.{f} or 0.0)" for f in kpi.fields) or "0.0"


def dimension(src: Source, field: str) -> str:
    """The label value of a dimension: the field's value (``unknown`` when unset) as admitted
    (``admit``: itself, or ``other`` beyond the label's cap, see ``metrics.labels``)."""
    return f"admit({src.const(field)}, str(d.{field} or 'unknown'))"


def key_dims(kpi: Any, dim: Callable[[str], str]) -> list[str]:
    """The key's values after (kpi, rep, team): ``dim(field)`` of each dimension; for a
    distinct count, the counted value itself, never a label (not exported, not capped: the
    count is the number of such keys in the merged parts, ``rollup.finish``)."""
    if kpi.aggregation == "distinct":
        return [f"d.{kpi.fields[0]}"]
    return [dim(f) for f in kpi.dimensions]


def rule_functions(kpi: Any) -> tuple[Callable[[Any], bool], Callable[[Any], float], Callable[..., tuple]]:
    """``match(d)``, ``value(d)`` and ``dims(d, admit=same)`` of one entry."""
    src = Source()
    dims = key_dims(kpi, lambda f: dimension(src, f))
    src.lines = [
        "def match(d):",
        f"    return {' and '.join(conditions(src, kpi)) or 'True'}",
        "def value(d):",
        f"    return {value(kpi)}",
        "def dims(d, admit=_same):",
        f"    return ({''.join(f'{e}, ' for e in dims)})",
    ]
    ns = src.compile()
    return ns["match"], ns["value"], ns["dims"]


def accumulator(kpis: Iterable[Any]) -> Callable[..., int]:
    """One function per event type that adds the hits of all its KPIs to a bucket dict.

    ``accumulate(d, rep, team, bucket, admit=same)`` -> the number of hits; a hit adds
    ``value`` under ``(kpi, rep, team, *dims)``. The hot path of the aggregate stage: one
    generated function instead of three calls per KPI per event. Each dimension value is
    admitted once per event, when the first KPI that reads it counts: the same decisions
    whichever path of the state applies the event.
    """
    kpis = list(kpis)
    src = Source()
    src.lines = ["def accumulate(d, rep, team, bucket, admit=_same):", "    n = 0"]
    for f in sorted({f for kpi in kpis for f in kpi.dimensions}):
        src.lines.append(f"    _d_{f} = None")
    for kpi in kpis:
        conds = conditions(src, kpi)
        indent = "    "
        if conds:
            src.lines.append(f"    if {' and '.join(conds)}:")
            indent = "        "
        for f in kpi.dimensions:
            src.lines.append(f"{indent}if _d_{f} is None:")
            src.lines.append(f"{indent}    _d_{f} = {dimension(src, f)}")
        dims = "".join(f", {e}" for e in key_dims(kpi, lambda f: f"_d_{f}"))
        src.lines.append(f"{indent}k = ({src.const(kpi.name)}, rep, team{dims})")
        src.lines.append(f"{indent}bucket[k] = bucket.get(k, 0.0) + {value(kpi)}")
        src.lines.append(f"{indent}n += 1")
    src.lines.append("    return n")
    return src.compile()["accumulate"]

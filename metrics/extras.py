"""What the state does beyond the catalog's generated sums: per event class, the hooks that
file samples, extremes and opportunity state (:func:`hooks`); per published window, the values
computed from state then (the open pipeline at the window's end, targets: :func:`window_values`).
See :mod:`metrics.opportunities`, :mod:`metrics.extremes` and :mod:`metrics.targets`."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from metrics.events import DATA_TYPES
from metrics.extremes import file_extremes
from metrics.opportunities import OPPORTUNITY_TYPES, apply_opportunity, open_values, sample_fields
from metrics.targets import target_values

if TYPE_CHECKING:  # pragma: no cover
    from metrics.state import PartitionState, WindowPart


def window_values(state: PartitionState, wpart: WindowPart) -> dict[tuple, float]:
    """A window's stored sums with the values computed at publication added (or the stored
    dict itself when there are none: read it, don't change it)."""
    extra = open_values(state, wpart)
    targets = target_values(state, wpart)
    if not (extra or targets):
        return wpart.values
    values = dict(wpart.values)
    values.update(extra)
    values.update(targets)
    return values


def hooks(catalog: Any) -> dict[type, Callable[..., None]]:
    """Per event class, what the state does besides the catalog's sums (none for most)."""
    out: dict[type, Callable[..., None]] = {}
    for etype, cls in DATA_TYPES.items():
        samplers = catalog.samplers.get(etype, ())
        extremes = catalog.extremes.get(etype, ())
        book = cls in OPPORTUNITY_TYPES and bool(catalog.computed)
        if not (samplers or extremes or book):
            continue

        def hook(state: PartitionState, data: Any, t: float, rep: str | None, team: str | None,
                 offset: int, replaying: bool, src_wm: float, samplers: tuple = samplers,
                 extremes: tuple = extremes, book: bool = book) -> None:
            if samplers:
                sample_fields(state, samplers, data, t, rep, team, offset, replaying, src_wm)
            if extremes:
                file_extremes(state, extremes, data, t, rep, team, offset, replaying, src_wm)
            if book:
                apply_opportunity(state, data, t, rep, team, offset, replaying, src_wm)
        out[cls] = hook
    return out

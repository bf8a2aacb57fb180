"""What a window publishes beyond its stored sums: values computed from state at publication
(the open pipeline at the window's end, targets), see :mod:`metrics.opportunities` and
:mod:`metrics.targets`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from metrics.opportunities import open_values
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

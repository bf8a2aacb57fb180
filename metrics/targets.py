"""Targets: a rep's targets (``rep.updated``, the roster) turn a KPI into an attainment ratio.

``targets`` maps a KPI to a target per window kind, e.g. ``{"calls_made": {"day": 60}}``. For
every count or sum KPI without dimensions the catalog has a hidden ``<kpi>_target`` (a sum,
``computed="target"``) and ``<kpi>_attainment_ratio`` = the KPI / its target. The targets are
not stored in the windows: when a window is published, each rep of the partition's roster with
a target for that KPI and window kind adds it, under the team the rep is in at the window's end
(a rep who moves team takes its target, and its activity from the event time of the change on,
to the new team). So the ratio is value / target for a rep (42 of 60 calls today = 0.7), and
for a team or the organisation the sum of its values over the sum of its reps' targets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metrics.leads import UNASSIGNED
from metrics.windows import WINDOW_KINDS

if TYPE_CHECKING:  # pragma: no cover
    from metrics.state import PartitionState, WindowPart

SUFFIX = "_target"


def target_values(state: PartitionState, wpart: WindowPart) -> dict[tuple, float]:
    """``(<kpi>_target, rep, team): target`` of the reps with a target for this window kind."""
    computed = state.catalog.computed.get("target")
    if not computed:
        return {}
    names = {k.name for k, _ in computed}
    kind = WINDOW_KINDS[wpart.kind]
    at = wpart.end - 0.001  # the team in effect at the window's end
    out: dict[tuple, float] = {}
    for rep, entry in state.roster.items():
        if not entry.targets:
            continue
        for kpi, by_window in entry.targets.items():
            target = by_window.get(kind)
            name = kpi + SUFFIX
            if target is None or name not in names:
                continue
            team = entry.team_at(at) or UNASSIGNED
            out[(name, rep, team)] = float(target)
    return out

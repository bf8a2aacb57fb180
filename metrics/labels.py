"""Bounded label cardinality: at most so many distinct values per label and partition.

Ids and dimension values are free text (SPEC section 2), and every distinct value adds series
to the state and to ``/metrics`` (per KPI, window kind and scope). A producer that sends a
million distinct rep ids or tool names must not grow either without bound. So each aggregate
partition admits at most a configured number of distinct values per label (``rep``, ``team``,
and each KPI dimension by its field name, e.g. ``tool``, ``reason``, ``source``, ``region``);
a value beyond its label's cap is counted under the label value :data:`OTHER`.

Which values are admitted is decided in event order, first come first admitted, and the
admitted sets are part of the partition state (persisted in their own snapshot parts), so a
replay after a crash decides every event exactly as the first pass did. A set only grows, and
once full stays full: a value refused once is refused for good, and a restored set that is
ahead of the replayed records (a cut-short snapshot) still gives each of them its first-pass
answer.
"""

from __future__ import annotations

import msgspec

#: The label value that stands for every value beyond its label's cap.
OTHER = "other"

REP, TEAM = "rep", "team"


class LabelCaps(msgspec.Struct, frozen=True, kw_only=True):
    """Distinct values admitted per label and partition. The defaults are in
    ``streams.settings.Settings`` only; a state without caps admits everything."""

    reps: int
    teams: int
    dimension_values: int  # each dimension (field name) on its own
    per_label: dict[str, int] = {}  # lower bounds of some dimensions (catalog ``max_values``)

    def of(self, label: str) -> int:
        if label == REP:
            return self.reps
        if label == TEAM:
            return self.teams
        return self.per_label.get(label, self.dimension_values)


def same(label: str, value: str) -> str:
    """The admission of a state without caps: every value is its own label value."""
    return value

"""Bounded cardinality in the partition state (``metrics.labels``).

At most a cap of distinct reps, teams and values per dimension are admitted, in event order,
and the rest is keyed ``other``. The admitted sets are parts of their own (``g/<label>``),
written before ``meta`` when they grew: a set only grows and, once full, never admits again, so
a restored set (even one ahead of ``meta``) gives every replayed event its first-pass answer.
"""

from __future__ import annotations

from typing import Any

from metrics.labels import OTHER, REP, TEAM
from metrics.state.roster import UNASSIGNED


class Labels:
    """Admission of label values by :class:`metrics.state.PartitionState`."""

    def _admitted(self, label: str, value: str) -> bool:
        """Admit ``value`` if its label has room; whether it is (now) admitted."""
        admitted = self.labels.get(label)
        if admitted is None:
            admitted = self.labels[label] = {}
        if value in admitted:
            return True
        if len(admitted) < self.label_caps.of(label):  # type: ignore[union-attr]
            admitted[value] = value
            self._dirty_labels.add(label)
            return True
        self.overflow[label] += 1
        return False

    def admit(self, label: str, value: str) -> str:
        """The label value of ``value``: itself if admitted (first come, up to the label's
        cap; the str first admitted, equal to it), else ``other``. Decided in event order and
        persisted, so a replay decides alike."""
        admitted = self.labels.get(label)
        if admitted is not None:
            known = admitted.get(value)
            if known is not None:
                return known  # the usual case: one dict lookup; the admitted str, shared
        return value if self._admitted(label, value) else OTHER

    def _admit_rep(self, rep: str, team: str | None) -> tuple[str, str | None]:
        """A rep not admitted yet: admit it (and its team), or map it to ``other``. The keys of
        ``other`` cannot take a team from the roster when read (they mix reps): an event
        without a team takes the rep's team now, from the roster as it is, else unassigned."""
        if self._admitted(REP, rep):
            if team is not None:
                team = self.admit(TEAM, team)
            return rep, team
        if team is None:
            return OTHER, self.team_of(rep)
        return OTHER, self.admit(TEAM, team)

    def label_of(self, label: str, value: Any) -> Any:
        """The label value of an already admitted (or refused) ``value``, without admitting:
        for values whose events were admitted as they were applied (lead responses)."""
        if self.label_caps is None or value is None or value == UNASSIGNED:
            return value
        admitted = self.labels.get(label)
        if admitted is None or value in admitted or len(admitted) < self.label_caps.of(label):
            return value
        return OTHER

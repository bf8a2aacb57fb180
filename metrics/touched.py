"""Markers in a window's ``touched`` groups (``metrics.state.windows``) for changes that no
(rep, team) pair names: some of the window's computed values (``metrics.extras``) changed."""

from __future__ import annotations


class Computed(tuple):
    """A group of no (rep, team) pairs that says: some of the window's computed values changed."""


#: the open pipeline at the window's end (``metrics.opportunities``)
OPEN_CHANGED = Computed()
#: a rep's targets (``metrics.targets``)
TARGETS_CHANGED = Computed()

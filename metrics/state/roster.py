"""The roster: each rep's team (and region, targets) by event time, from ``rep.updated``.

An event without a team is credited to the team its rep was in at the event's time (resolved
when a window is read, or when applied if the rep's entry is known). A rep who moves team is
credited to the new team from the event time of the change on; the last few earlier entries
are kept for events read late.
"""

from __future__ import annotations

import msgspec

from metrics.events import RepUpdated
from metrics.labels import REP, TEAM
from metrics.touched import TARGETS_CHANGED

UNASSIGNED = "unassigned"
ROSTER_HISTORY = 16  # earlier (time, team) entries kept per rep


class RosterEntry(msgspec.Struct, array_like=True):
    time: float
    team: str | None
    region: str | None = None
    targets: dict[str, dict[str, float]] | None = None
    #: (time, team) of the rep's earlier entries, oldest first (the last few): a rep who moves
    #: team is credited to the new team from the event time of the change on
    earlier: list[tuple[float, str | None]] = []

    def team_at(self, t: float) -> str | None:
        """The team in effect at event time ``t`` (None before the first known entry)."""
        if t >= self.time:
            return self.team
        for time, team in reversed(self.earlier):
            if t >= time:
                return team
        return None


class Roster:
    """The roster of :class:`metrics.state.PartitionState`."""

    def team_of(self, rep: str | None) -> str:
        """The rep's team from the roster (latest ``rep.updated`` by event time)."""
        entry = self.roster.get(rep) if rep is not None else None
        return entry.team if entry is not None and entry.team else UNASSIGNED

    def _roster_update(self, data: RepUpdated, t: float) -> None:
        team = data.team_id
        if self.label_caps is not None:
            if not self._admitted(REP, data.rep_id):
                return  # the roster is bounded too: a rep beyond the cap is "other", teamless
            if team is not None:
                team = self.admit(TEAM, team)
        current = self.roster.get(data.rep_id)
        if current is None or t >= current.time:
            earlier = [] if current is None else [*current.earlier, (current.time, current.team)]
            self.roster[data.rep_id] = RosterEntry(
                t, team, data.region, data.targets, earlier[-ROSTER_HISTORY:])
            if current is None or current.team != team:
                # keys stored without a team are attributed by the roster when read: the
                # windows are read whole again
                self._mark_all(self._windows)
            elif current.targets != data.targets:
                # targets are published with the windows (metrics.targets): read them again
                self._mark_computed(self._windows, TARGETS_CHANGED)
        elif (t, team) not in current.earlier:
            # an earlier change read late: it only tells who was in which team when
            current.earlier = sorted([*current.earlier, (t, team)])[-ROSTER_HISTORY:]

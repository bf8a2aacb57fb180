"""One partition's window split into rep, team and organisation parts, again only where it changed.

:func:`metrics.rollup.split` walks every key of a window: with 1,000 reps that is ~10,000 keys
per window and partition, and a round of roll-up partials every 0.1 s would walk them all for
the few reps that had an event. A :class:`SplitIndex` keeps, for one window, which keys belong
to which *group* (a rep and the team its keys name, or the keys of a team without a rep), the
parts each group gave last, and the team and organisation parts. Given the (rep, team) pairs
whose keys changed (the state's ``touched`` groups, :mod:`metrics.state.windows`) it builds the
parts of those groups again, and moves the teams' and the organisation's parts by the
difference: a round costs what its changed reps hold, not what the window holds.

The parts it gives equal those :func:`split` gives for the same scopes: a rep's exactly (key
for key, in the same order); a team's and the organisation's sums up to rounding (they are
moved by differences; integer counts stay exact), their sketches and extremes exactly.

Keys are only ever added to a window (never removed; a sample series' list changes in place),
so the keys added since the last read are the dict's last ones. The window's computed values
(open pipeline, targets: ``metrics.extras``) are read apart: the caller passes them, and the
index compares them with the last ones it saw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from itertools import islice

from metrics.extremes import combine, is_extreme
from metrics.rollup import RESTS, Parts, new_rest, split
from metrics.sketch import Sketch

Split = tuple[dict[tuple[str, str], Parts], dict[str, Parts], Parts]
Group = tuple[str | None, str]  # (rep or None, team as split labels it)

_MISSING = object()

class SplitIndex:
    __slots__ = ("n_values", "n_samples", "extras", "targets", "absent", "group_keys",
                 "group_rests", "group_samples", "groups", "rep_teams", "team_groups",
                 "team_parts", "org")

    def __init__(self) -> None:
        self.n_values = 0  # keys of the window's sums indexed so far
        self.n_samples = 0  # keys of its sample series indexed so far
        self.extras: dict[tuple, float] = {}  # the computed values last read
        #: the window's targets as last read whole (they change with the roster, which has
        #: the window read whole: ``metrics.state.roster``)
        self.targets: dict[tuple, float] = {}
        #: the scopes the last :meth:`update` read and found without any key: ("rep", id) or
        #: ("team", id)
        self.absent: set[tuple[str, str]] = set()
        self.group_keys: dict[Group, tuple[tuple, ...]] = {}  # in the window's order
        #: each group's keys as its parts key them, (kpi, *dims): parallel to group_keys
        self.group_rests: dict[Group, tuple[tuple, ...]] = {}
        self.group_samples: dict[Group, tuple[tuple, ...]] = {}
        self.groups: dict[Group, Parts] = {}  # the parts each group gave last
        self.rep_teams: dict[str, dict[str, None]] = {}  # rep -> the teams of its groups
        self.team_groups: dict[str, set[Group]] = {}
        self.team_parts: dict[str, Parts] = {}
        self.org = Parts()

    def full(self, values: Mapping[tuple, float], samples: Mapping[tuple, list[float]],
             extras: Mapping[tuple, float], team_of: Callable[[str | None], str]) -> Split:
        """The whole window, as :func:`split` gives it; the index is built again."""
        merged = values if not extras else {**values, **extras}
        reps, teams, org = split(merged, samples, team_of)
        self.__init__()  # type: ignore[misc]
        self.extras = dict(extras)
        self._index(merged, samples, team_of)
        self.n_values, self.n_samples = len(values), len(samples)
        for group in self.group_keys.keys() | self.group_samples.keys():
            parts = reps.get(group) if group[0] is not None else None  # type: ignore[call-overload]
            if parts is None:
                parts = self._group(group, values, samples, self.extras)
            if parts is not None:
                self.groups[group] = parts
        self.team_parts = {team: Parts(dict(p.sums), dict(p.samples), {
            s: Sketch().merge_from(k) for s, k in p.sketches.items()}) for team, p in teams.items()}
        self.org = Parts(dict(org.sums), dict(org.samples), {
            s: Sketch().merge_from(k) for s, k in org.sketches.items()})
        return reps, teams, org

    def update(self, values: Mapping[tuple, float], samples: Mapping[tuple, list[float]],
               extras: Mapping[tuple, float] | None, team_of: Callable[[str | None], str],
               touched: Iterable[Iterable[tuple]]) -> Split | None:
        """The parts of the reps and teams that the ``touched`` (rep, team) pairs name (and
        the organisation's); ``extras`` None: the computed values did not change since the
        last read. None when the window must be read whole (:meth:`full`)."""
        if len(values) < self.n_values or len(samples) < self.n_samples:
            return None  # keys went: not a window this index knows
        pairs: set[tuple] = set().union(*touched)
        new_samples = islice(samples, self.n_samples, None) if len(samples) > self.n_samples else ()
        self._index(islice(values, self.n_values, None), new_samples, team_of)
        self.n_values, self.n_samples = len(values), len(samples)
        if extras is not None and extras != self.extras:
            old = self.extras
            for key in old.keys() | extras.keys():
                if old.get(key, _MISSING) != extras.get(key, _MISSING):
                    pairs.add((key[1], key[2]))
            self._index((k for k in extras if k not in old and k not in values), (), team_of)
            self.extras = dict(extras)
        extras = self.extras
        absent = self.absent = set()
        teams_moved: set[str] = set()
        extreme: dict[str, set[str]] = {}  # team -> extreme series of its groups that changed
        reps: set[str] = set()
        for rep, team in pairs:
            group = (rep, team if team is not None else team_of(rep))
            new = self._group(group, values, samples, extras)
            old = self.groups.get(group)
            if new is None:
                if old is None:
                    continue
                del self.groups[group]
            else:
                self.groups[group] = new
            self._move(group[1], old, new, extreme)
            teams_moved.add(group[1])
            if rep is not None:
                reps.add(rep)
        out_reps: dict[tuple[str, str], Parts] = {}
        for rep in reps:
            found = False
            for team in self.rep_teams.get(rep, ()):
                parts = self.groups.get((rep, team))
                if parts is not None:
                    out_reps[(rep, team)] = parts
                    found = True
            if not found:
                absent.add(("rep", rep))
        org = self.org
        for team, series in extreme.items():
            members = (self.groups.get(g) for g in self.team_groups.get(team, ()))
            _combine_into(self.team_parts[team], series, [p for p in members if p is not None])
        out_teams: dict[str, Parts] = {}
        for team in teams_moved:
            if any(g in self.groups for g in self.team_groups.get(team, ())):
                out_teams[team] = self.team_parts[team]
            else:
                self.team_parts.pop(team, None)
                absent.add(("team", team))
        if extreme:
            _combine_into(org, {s for series in extreme.values() for s in series},
                          list(self.team_parts.values()))
        return out_reps, out_teams, org

    # -- the index -------------------------------------------------------------------------
    def _index(self, keys: Iterable[tuple], sample_keys: Iterable[tuple],
               team_of: Callable[[str | None], str]) -> None:
        """Enter new keys of the window in their groups. A group's keys (and rests) are held
        as tuples, made again when keys are added (rarely: a window's keys settle early): a
        tuple of shared key tuples is untracked by the garbage collector, and a worker's full
        collections no longer walk them (lists of them were ~40 % of the tracked objects)."""
        rests = self.group_rests
        for table, source in ((self.group_keys, keys), (self.group_samples, sample_keys)):
            added: dict[Group, list[tuple]] = {}
            for key in source:
                rep, team = key[1], key[2]
                group = (rep, team if team is not None else team_of(rep))
                entry = added.get(group)
                if entry is None:
                    entry = added[group] = []
                    if group not in table:
                        self.team_groups.setdefault(group[1], set()).add(group)
                        if rep is not None:
                            self.rep_teams.setdefault(rep, {})[group[1]] = None
                entry.append(key)
            for group, new in added.items():
                table[group] = table.get(group, ()) + tuple(new)
                if table is self.group_keys:
                    made = [RESTS.get(key) or new_rest(key) for key in new]
                    rests[group] = rests.get(group, ()) + tuple(made)

    def _group(self, group: Group, values: Mapping[tuple, float],
               samples: Mapping[tuple, list[float]], extras: Mapping[tuple, float]) -> Parts | None:
        """A group's parts as :func:`split` builds a rep's (sums, raw samples, extremes), or
        None when none of its keys holds a value."""
        parts = Parts()
        found = False
        keys = self.group_keys.get(group, ())
        # Most groups: every key holds a value (a computed one, extras, over the window's
        # own), each its own rest: the parts' sums in one pass in C, the state's own floats,
        # in the keys' order.
        if keys:
            got = list(map(values.get, keys))
            if extras:
                got = list(map(extras.get, keys, got))
            if None not in got:
                rests = self.group_rests[group]
                sums = dict(zip(rests, got, strict=True))
                if len(sums) == len(rests):
                    parts.sums = sums
                    found = True
                    keys = ()
        sums = parts.sums
        for key in keys:
            v = extras.get(key, _MISSING) if extras else _MISSING
            if v is _MISSING:
                v = values.get(key, _MISSING)
                if v is _MISSING:
                    continue
            found = True
            rest = RESTS.get(key)
            if rest is None:
                rest = new_rest(key)
            held = sums.get(rest)
            # the state's own float when the rest has one key (most): no copy of it is made
            sums[rest] = v if held is None else held + v  # type: ignore[assignment,operator]
        for key in self.group_samples.get(group, ()):
            obs = samples[key]
            if not obs:
                continue
            found = True
            series = key[0]
            if is_extreme(series):
                parts.samples[series] = combine(series, parts.samples.get(series), obs)
            else:
                parts.samples.setdefault(series, []).extend(obs)
        return parts if found else None

    def _move(self, team: str, old: Parts | None, new: Parts | None,
              extreme: dict[str, set[str]]) -> None:
        """Move the team's and the organisation's parts from a group's ``old`` parts to its
        ``new`` ones; the extreme series that changed are noted, to be combined again."""
        tp = self.team_parts.get(team)
        if tp is None:
            tp = self.team_parts[team] = Parts()
        org = self.org
        new_sums = new.sums if new is not None else {}
        old_sums = old.sums if old is not None else {}
        t_sums, o_sums = tp.sums, org.sums
        old_get = old_sums.get
        for rest, v in new_sums.items():
            was = old_get(rest)
            if was is None:
                d = v
            elif v == was:
                continue  # most of a changed group's sums: moving by 0.0 changes nothing
            else:
                d = v - was
            t_sums[rest] = t_sums.get(rest, 0.0) + d
            o_sums[rest] = o_sums.get(rest, 0.0) + d
        for rest, v in old_sums.items():
            if rest not in new_sums:
                t_sums[rest] = t_sums.get(rest, 0.0) - v
                o_sums[rest] = o_sums.get(rest, 0.0) - v
        new_samples = new.samples if new is not None else {}
        old_samples = old.samples if old is not None else {}
        for series in new_samples.keys() | old_samples.keys():
            if is_extreme(series):
                extreme.setdefault(team, set()).add(series)
                continue
            now, before = new_samples.get(series, ()), old_samples.get(series, ())
            if len(now) >= len(before) and now[:len(before)] == before:
                gained, lost = now[len(before):], ()
            else:
                gained, lost = now, before
            if not (gained or lost):
                continue
            for scope in (tp, org):
                sketch = scope.sketches.get(series)
                if sketch is None:
                    sketch = scope.sketches[series] = Sketch()
                if lost:
                    sketch.discard(lost)
                sketch.extend(gained)


def _combine_into(target: Parts, series: Iterable[str], members: list[Parts]) -> None:
    """``target``'s extreme ``series`` (min, max, last) combined again from its ``members``."""
    for s in series:
        combined = None
        for parts in members:
            obs = parts.samples.get(s)
            if obs:
                combined = combine(s, combined, obs)
        if combined is None:
            target.samples.pop(s, None)
        else:
            target.samples[s] = combined

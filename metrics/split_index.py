"""One partition's window split into rep, team and organisation parts, again only where it changed.

:func:`metrics.rollup.split` walks every key of a window: with 1,000 reps that is ~10,000 keys
per window and partition, and a round of roll-up partials every 0.1 s would walk them all for
the few reps that had an event. A :class:`SplitIndex` keeps, for one window, which keys belong
to which rep and which team, and the team parts it gave last; given the keys that changed (the
state's ``touched`` groups, :mod:`metrics.state.windows`) it builds the parts of only the reps
and teams they name, and the organisation's from the teams' parts. The parts it gives are
those :func:`split` gives for the same scopes, key for key and in the same order (so equal sums
to the last bit), except the organisation's sums, added up team by team instead of key by key
(the roll-up stage adds them across partitions the same way).

Keys are only ever added to a window (never removed; a sample series' list changes in place),
so the keys added since the last read are the dict's last ones. The window's computed values
(open pipeline, targets: ``metrics.extras``) are read apart: the caller passes them, and the
index compares them with the last ones it saw.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from itertools import islice

from metrics.extremes import combine, is_extreme
from metrics.rollup import Parts, merge, split
from metrics.sketch import Sketch

Split = tuple[dict[tuple[str, str], Parts], dict[str, Parts], Parts]

_MISSING = object()


class SplitIndex:
    __slots__ = ("n_values", "n_samples", "extras", "rep_keys", "team_keys", "rep_samples",
                 "team_samples", "team_parts", "targets", "absent", "org")

    def __init__(self) -> None:
        self.n_values = 0  # keys of the window's sums indexed so far
        self.n_samples = 0  # keys of its sample series indexed so far
        self.extras: dict[tuple, float] = {}  # the computed values last read
        self.rep_keys: dict[str, list[tuple]] = {}  # rep -> its keys, in the window's order
        self.team_keys: dict[str, list[tuple]] = {}  # team (as split labels it) -> keys
        self.rep_samples: dict[str, list[tuple]] = {}
        self.team_samples: dict[str, list[tuple]] = {}
        self.team_parts: dict[str, Parts] = {}  # team -> its parts as last given
        #: the window's targets as last read whole (they change with the roster, which has
        #: the window read whole: ``metrics.state.roster``)
        self.targets: dict[tuple, float] = {}
        #: the scopes the last :meth:`update` read and found without any key: ("rep", id) or
        #: ("team", id)
        self.absent: set[tuple[str, str]] = set()
        self.org = Parts()  # the organisation's parts as last given

    def full(self, values: Mapping[tuple, float], samples: Mapping[tuple, list[float]],
             extras: Mapping[tuple, float], team_of: Callable[[str | None], str]) -> Split:
        """The whole window, as :func:`split` gives it; the index is built again."""
        merged = values if not extras else {**values, **extras}
        reps, teams, org = split(merged, samples, team_of)
        self.__init__()  # type: ignore[misc]
        self.extras = dict(extras)
        self._index_values(merged, team_of)
        self.n_values = len(values)
        self._index_samples(samples, team_of)
        self.team_parts = dict(teams)
        self.org = org
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
        self._index_values(islice(values, self.n_values, None), team_of)
        self.n_values = len(values)
        if len(samples) > self.n_samples:
            self._index_samples(islice(samples, self.n_samples, None), team_of)
            self.n_samples = len(samples)
        if extras is not None and extras != self.extras:
            old = self.extras
            for key in old.keys() | extras.keys():
                if old.get(key, _MISSING) != extras.get(key, _MISSING):
                    pairs.add((key[1], key[2]))
            self._index_values((k for k in extras if k not in old and k not in values), team_of)
            self.extras = dict(extras)
        extras = self.extras
        reps: dict[tuple[str, str], Parts] = {}
        teams: dict[str, Parts] = {}
        absent = self.absent = set()
        for rep in {r for r, _ in pairs if r is not None}:
            if not self._rep(rep, values, samples, extras, team_of, reps):
                absent.add(("rep", rep))
        org = self.org
        for team in {t if t is not None else team_of(r) for r, t in pairs}:
            parts = self._team(team, values, samples, extras)
            if parts is None:
                if self.team_parts.pop(team, None) is not None:
                    absent.add(("team", team))
                continue
            _add(org, parts, self.team_parts.get(team))
            teams[team] = self.team_parts[team] = parts
        if absent:
            org = self.org = merge(self.team_parts.values())
        elif any(is_extreme(s) for p in teams.values() for s in p.samples):
            for series in {s for p in teams.values() for s in p.samples if is_extreme(s)}:
                combined = None
                for p in self.team_parts.values():
                    obs = p.samples.get(series)
                    if obs:
                        combined = combine(series, combined, obs)
                org.samples[series] = combined  # type: ignore[assignment]
        return reps, teams, org

    # -- the index -------------------------------------------------------------------------
    def _index_values(self, keys: Iterable[tuple], team_of: Callable[[str | None], str]) -> None:
        rep_keys, team_keys = self.rep_keys, self.team_keys
        for key in keys:
            rep, team = key[1], key[2]
            if team is None:
                team = team_of(rep)
            if rep is not None:
                rep_keys.setdefault(rep, []).append(key)
            team_keys.setdefault(team, []).append(key)

    def _index_samples(self, keys: Iterable[tuple], team_of: Callable[[str | None], str]) -> None:
        rep_samples, team_samples = self.rep_samples, self.team_samples
        for key in keys:
            rep, team = key[1], key[2]
            if team is None:
                team = team_of(rep)
            if rep is not None:
                rep_samples.setdefault(rep, []).append(key)
            team_samples.setdefault(team, []).append(key)

    # -- parts, as split builds them -----------------------------------------------------
    @staticmethod
    def _value(key: tuple, values: Mapping[tuple, float], extras: Mapping[tuple, float]) -> object:
        v = extras.get(key, _MISSING)
        return values.get(key, _MISSING) if v is _MISSING else v

    def _rep(self, rep: str, values: Mapping[tuple, float], samples: Mapping[tuple, list[float]],
             extras: Mapping[tuple, float], team_of: Callable[[str | None], str],
             out: dict[tuple[str, str], Parts]) -> bool:
        mine: dict[tuple[str, str], Parts] = {}
        value = self._value
        for key in self.rep_keys.get(rep, ()):
            v = value(key, values, extras)
            if v is _MISSING:
                continue
            kpi, _, team, *dims = key
            if team is None:
                team = team_of(rep)
            rp = mine.get((rep, team))
            if rp is None:
                rp = mine[(rep, team)] = Parts()
            rest = (kpi, *dims)
            rp.sums[rest] = rp.sums.get(rest, 0.0) + v  # type: ignore[operator]
        for key in self.rep_samples.get(rep, ()):
            obs = samples[key]
            if not obs:
                continue
            series, _, team = key
            if team is None:
                team = team_of(rep)
            rp = mine.get((rep, team))
            if rp is None:
                rp = mine[(rep, team)] = Parts()
            if is_extreme(series):
                rp.samples[series] = combine(series, rp.samples.get(series), obs)
            else:
                rp.samples.setdefault(series, []).extend(obs)
        out.update(mine)
        return bool(mine)

    def _team(self, team: str, values: Mapping[tuple, float],
              samples: Mapping[tuple, list[float]], extras: Mapping[tuple, float]) -> Parts | None:
        tp = Parts()
        sums = tp.sums
        value = self._value
        found = False
        for key in self.team_keys.get(team, ()):
            v = value(key, values, extras)
            if v is _MISSING:
                continue
            found = True
            rest = (key[0], *key[3:])
            sums[rest] = sums.get(rest, 0.0) + v  # type: ignore[operator]
        for key in self.team_samples.get(team, ()):
            obs = samples[key]
            if not obs:
                continue
            found = True
            series = key[0]
            if is_extreme(series):
                tp.samples[series] = combine(series, tp.samples.get(series), obs)
                continue
            sketch = tp.sketches.get(series)
            if sketch is None:
                sketch = tp.sketches[series] = Sketch()
            sketch.extend(obs)
        return tp if found else None


def _add(org: Parts, new: Parts, old: Parts | None) -> None:
    """The organisation's sums and sketches with a team's ``old`` parts replaced by ``new``
    (its extremes are combined again by the caller: they do not subtract)."""
    sums = org.sums
    old_sums = old.sums if old is not None else {}
    for rest, v in new.sums.items():
        sums[rest] = sums.get(rest, 0.0) + (v - old_sums.get(rest, 0.0))
    for rest, v in old_sums.items():
        if rest not in new.sums:
            sums[rest] = sums.get(rest, 0.0) - v
    old_sketches = old.sketches if old is not None else {}
    for series in new.sketches.keys() | old_sketches.keys():
        mine = org.sketches.get(series)
        if mine is None:
            mine = org.sketches[series] = Sketch()
        bins = mine.bins
        gained, lost = new.sketches.get(series), old_sketches.get(series)
        if gained is not None:
            for key, n in gained.bins.items():
                bins[key] = bins.get(key, 0) + n
            mine.zeros += gained.zeros
            mine.count += gained.count
            mine.sum += gained.sum
        if lost is not None:
            for key, n in lost.bins.items():
                left = bins.get(key, 0) - n
                if left:
                    bins[key] = left
                else:
                    bins.pop(key, None)
            mine.zeros -= lost.zeros
            mine.count -= lost.count
            mine.sum -= lost.sum

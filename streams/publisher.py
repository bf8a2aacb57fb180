"""What an aggregate partition tells the world once its state is durable.

For every window that changed since the last publication (at most once per
``SALESPULSE_METRICS_INTERVAL_SECONDS`` per partition, longer while a backlog makes it costly),
one roll-up :class:`metrics.partials.Partial` per rep whose parts changed, per team and one for
the organisation, to the internal ``<app_id>-rollup`` topic, in the partition of the rep or
team (crc32 of its id, like the keyed events) so that one worker merges each scope's parts from
every aggregate partition. A rep's own partition holds its sums, but its lead response times
live in the partitions of its leads: only the merge has them all. Tombstones go out when a
scope disappears from a window or the window expires (the topic is compacted: it holds the
latest partial per scope, window and source partition).

Records are captured synchronously right after the partition's snapshot (or while it is clean),
so they reflect exactly the state that the snapshot makes durable, and are sent after it is.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from zlib import crc32

from metrics.extras import window_values
from metrics.leads import UNASSIGNED
from metrics.opportunities import open_values
from metrics.partials import ENCODER, ORG_ID, make_partial, partial_key, watermark_key
from metrics.rollup import Parts, merge, split
from metrics.split_index import SplitIndex
from metrics.state import PartitionState, WindowPart
from metrics.targets import target_values
from metrics.touched import TARGETS_CHANGED
from streams.pacing import BACKLOG, Pacing, Rounds

#: (topic, key, value or None for a tombstone, partition or None)
Record = tuple[str, bytes, bytes | None, int | None]

#: The loop's time a whole read costs per key of the window (splitting, encoding and sending
#: the partials), until a round of :data:`LEARN_KEYS` keys or more has measured it: a backlog's
#: first round is paced by what it will read, not by the cheap rounds before it.
KEY_COST = 5e-6
LEARN_KEYS = 20_000

#: A round that reads this many keys or more at the end of a backlog (``Publisher(tail=...)``)
#: waits until what the worker applied before it is durable. Such a round reads every window
#: the backlog changed (1,000 reps and 33 minutes of history: ~220,000-370,000 keys, 1-2 s of the
#: loop) and fills the producer with partials: run before the backlog's last snapshot, it went
#: ahead of it, and in 8 of 24 benchmark runs the backlog took 2-7 s longer to be durable and
#: the worker peaked ~100 MB higher (docs/benchmark.md, "The end of a backlog").
TAIL_KEYS = LEARN_KEYS


def scope_partition(scope_id: str, partitions: int) -> int:
    """The roll-up partition of a team (or the org): the same hash the ingest stage routes by."""
    return crc32(scope_id.encode()) % partitions


class Publisher:
    def __init__(
        self,
        *,
        partitions: int,
        rollup_topic: str,
        interval: float,
        clock: Callable[[], float] = time.time,
        event_time: bool = False,
        pacing: Pacing = BACKLOG,
        team_interval: float = 0.0,
        behind: Callable[[], bool] = lambda: False,
        tail: Callable[[], bool] = lambda: False,
    ) -> None:
        self.partitions = partitions
        self.rollup_topic = rollup_topic
        self.interval = interval
        self.clock = clock
        #: a window's team and organisation partials go out at most this often (a team has an
        #: event in almost every round, and its partial is the largest): the teams changed in
        #: between are held and go out together, with the organisation's
        self.team_interval = team_interval
        #: whether the worker is in a backlog: every window is read whole then (every rep
        #: changes between two rounds anyway), and no index is kept for it (its memory: ~100
        #: bytes a key), until the worker has caught up
        self.behind = behind
        #: asked when a round of :data:`TAIL_KEYS` keys or more is due: whether the worker is
        #: at the end of a backlog and what it applied before now is not durable yet (the round
        #: then waits, see :meth:`due`)
        self.tail = tail
        self._whole = False  # this capture reads every window whole (the worker is behind)
        self._held: dict[tuple[int, int, float], set[str]] = {}  # window -> teams held back
        self._teams_sent: dict[tuple[int, int, float], float] = {}  # window -> when they went
        #: windows close by event time (``SALESPULSE_WINDOW_CLOCK=event``): an expired window's
        #: parts are published, not tombstoned, and the roll-up stage closes it by its own
        #: event-time clock (then it tombstones them itself, see ``streams.rollup``)
        self.event_time = event_time
        self._marked: dict[int, float] = {}  # event time: source -> watermark last announced
        #: event time: (source partition, kind, start) -> digest of the window's last partials
        self._digests: dict[tuple[int, int, float], int] = {}
        #: paced by the keys a round reads whole (streams.pacing.Rounds): known before it runs
        self.rounds = Rounds(interval, pacing, live=True, unit_cost=KEY_COST, learn_from=LEARN_KEYS,
                             start=clock())
        self._open = False  # a round was found due and has not been spent yet
        #: the keys the open round's captures read whole while behind, or -1 once one of them
        #: read a window where it changed only: the round's work (see :meth:`spent`)
        self._round_keys = 0
        self._epoch = 0  # of the partition whose window is being published
        #: (source partition, kind, start) -> (scope, id) with a partial in the roll-up topic
        self._published: dict[tuple[int, int, float], set[tuple[str, str]]] = {}
        #: (source partition, rep, kind, start) -> hash of the rep's last published parts
        self._rep_sent: dict[tuple[int, str, int, float], int] = {}
        #: (source partition, kind, start) -> which keys of the window are whose: a round
        #: splits only what changed (metrics.split_index)
        self._index: dict[tuple[int, int, float], SplitIndex] = {}
        self.whole_reads = 0  # windows split whole (a restore, a roster change, a backlog)
        self.partial_reads = 0  # windows split only where they changed

    def due(self, keys: Callable[[], int] | None = None) -> bool:
        """Whether a publication round is due: the interval has passed, stretched to
        :mod:`streams.pacing`'s factor times the last round's cost (see :meth:`spent`), or,
        while the worker is behind (windows are read whole), the cost of reading the ``keys``
        of the changed windows. A round with 1,000 reps and all six windows changed (a
        backlog) costs ~0.2-0.4 s. A round found due is the only one until it is
        :meth:`spent`: a flush publishes the partitions whose snapshot just became durable,
        the publication tick the others, and both had run at once, each due by the last
        round's cost. A round of :data:`TAIL_KEYS` keys or more at the end of a backlog waits
        while ``tail`` says so: until what the worker applied before it is durable."""
        if self._open:
            return False  # one round at a time (a flush's and the publication tick's)
        # counted at most once: the pacing and the tail may both ask
        count = functools.cache(keys) if keys is not None else None
        due = self.rounds.due(self.clock(), count if self.behind() else None)
        if due and count is not None and count() >= TAIL_KEYS and self.tail():
            due = False  # asked again at the next tick
        self._open = due
        self._round_keys = 0
        return due

    def spent(self, seconds: float, waited: float = 0.0) -> None:
        """A round took ``seconds`` of the loop (capturing and sending) and its sends ``waited``
        for room in the producer's buffer (:func:`streams.pacing.send_all`): pace the next one,
        and learn the cost of a key from a round that read every window whole."""
        self._open = False
        self.rounds.done(self.clock(), seconds, waited, max(self._round_keys, 0))

    def capture(self, partition: int, state: PartitionState) -> list[Record]:
        """The partials of the windows of ``partition`` that changed or expired since its last
        capture (call it in a round that is :meth:`due`)."""
        expired, state.expired_windows = state.expired_windows, []
        windows = state.windows  # folds what was applied: its windows are in the changed set
        changed, state.changed_windows = state.changed_windows, set()
        touched, state.touched = state.touched, {}
        state.touched_keys = 0
        self._whole = self.behind()
        if not self._whole:
            self._round_keys = -1
        out: list[Record] = []
        for wkey in sorted(changed):
            wpart = windows.get(wkey)
            if wpart is not None:
                self._window(out, partition, state, wpart, final=False, touched=touched.get(wkey))
        if self._held:
            now = self.clock()
            for pkey in [k for k, teams in self._held.items() if k[0] == partition and teams]:
                wpart = windows.get(pkey[1:])
                if wpart is not None and now - self._teams_sent.get(pkey, 0.0) >= self.team_interval:
                    self._epoch = state.epoch
                    self._release(out, pkey, wpart, state.applied, now)
        for wpart in expired:
            self._held.pop((partition, wpart.kind, wpart.start), None)
            self._teams_sent.pop((partition, wpart.kind, wpart.start), None)
            if not self.event_time:
                self._window(out, partition, state, wpart, final=True)  # drops its index
                continue
            # event time: what was not published yet goes out (the roll-up stage closes the
            # window itself); the publication memory of the window goes
            self._window(out, partition, state, wpart, final=False, expiring=True)
            self._published.pop((partition, wpart.kind, wpart.start), None)
            for key in [k for k in self._rep_sent
                        if k[0] == partition and k[2:] == (wpart.kind, wpart.start)]:
                del self._rep_sent[key]
        if self.event_time and state.watermark > self._marked.get(partition, float("-inf")):
            # after the round's partials, in every roll-up partition: see metrics.partials
            self._marked[partition] = state.watermark
            value = ENCODER.encode(state.watermark)
            out.extend((self.rollup_topic, watermark_key(partition), value, p)
                       for p in range(self.partitions))
        return out

    def forget(self, partition: int) -> None:
        """The partition went to another worker: its publication memory goes with it."""
        for key in [k for k in self._published if k[0] == partition]:
            del self._published[key]
        for key in [k for k in self._rep_sent if k[0] == partition]:
            del self._rep_sent[key]
        for key in [k for k in self._digests if k[0] == partition]:
            del self._digests[key]
        for key in [k for k in self._index if k[0] == partition]:
            del self._index[key]
        for table in (self._held, self._teams_sent):
            for key in [k for k in table if k[0] == partition]:
                del table[key]
        self._marked.pop(partition, None)

    def _split(self, pkey: tuple[int, int, float], state: PartitionState, w: WindowPart,
               touched: list | None, whole: bool) -> tuple[dict, dict, Parts, bool]:
        """The window's parts: of the reps and teams its ``touched`` keys name (and the
        organisation's), or of every scope: ``whole`` (a final or event-time read) or while the
        worker is behind, with plain :func:`split` and no index kept; without an index yet, or
        when anything may have changed, building the index. The last item says which."""
        if whole or self._whole:
            self._index.pop(pkey, None)
            self.whole_reads += 1
            if self._round_keys >= 0:
                self._round_keys += len(w.values)
            return (*split(window_values(state, w), w.samples, state.team_of), True)
        opened = open_values(state, w)
        index = self._index.get(pkey)
        if touched is not None and index is not None:
            if any(group is TARGETS_CHANGED for group in touched):
                index.targets = target_values(state, w)
            extras = {**opened, **index.targets} if index.targets else opened
            got = index.update(w.values, w.samples, extras, state.team_of, touched)
            if got is not None:
                self.partial_reads += 1
                return (*got, False)
        index = self._index[pkey] = SplitIndex()
        targets = target_values(state, w)
        extras = {**opened, **targets} if targets else opened
        self.whole_reads += 1
        got = index.full(w.values, w.samples, extras, state.team_of)
        index.targets = targets
        return (*got, True)

    def _window(self, out: list[Record], partition: int, state: PartitionState, w: WindowPart,
                *, final: bool, expiring: bool = False, touched: list | None = None) -> None:
        self._epoch = state.epoch
        kind, start = w.kind, w.start
        version = state.applied
        pkey = (partition, kind, start)
        # closing by event time, the digest of the whole window says whether it changed
        reps, teams, org, whole = self._split(pkey, state, w, touched,
                                              whole=final or self.event_time)
        if self.event_time:
            digest = _digest(reps, teams, org)
            if expiring:
                if self._digests.pop(pkey, None) == digest:
                    return  # all published already: a partial now would only arrive late
            else:
                self._digests[pkey] = digest
        before = self._published.pop(pkey, set())
        by_rep: dict[str, list[tuple[str, Parts]]] = {}
        for (rep, team), parts in reps.items():
            by_rep.setdefault(rep, []).append((team, parts))
        present = {("team", t) for t in teams} | {("rep", r) for r in by_rep} | {("org", ORG_ID)}
        if not whole:
            # a partial read names only the scopes it read: the others stay as they were,
            # but for those it read and found without any key (their computed values went)
            present = (present | before) - self._index[pkey].absent
        if final:
            for scope, scope_id in before | present:
                out.append(self._tombstone(scope, scope_id, kind, start, partition))
                if scope == "rep":
                    self._rep_sent.pop((partition, scope_id, kind, start), None)
            return
        if whole or not self.team_interval:
            for team, parts in teams.items():
                out.append(self._partial("team", team, w, partition, version, parts))
            out.append(self._partial("org", ORG_ID, w, partition, version, org))
            self._held.pop(pkey, None)
            self._teams_sent[pkey] = self.clock()
        else:
            held = self._held.setdefault(pkey, set())
            held.update(teams)
            now = self.clock()
            if now - self._teams_sent.get(pkey, 0.0) >= self.team_interval:
                self._release(out, pkey, w, version, now)
        for rep, entries in by_rep.items():
            team = _label(state, rep, entries)
            parts = merge(p for _, p in entries) if len(entries) > 1 else entries[0][1]
            skey = (partition, rep, kind, start)
            # keys are only ever added to a window, so equal parts iterate in equal order
            sums, samples = parts.sums, parts.samples
            digest = hash((team, tuple(sums), tuple(sums.values()),
                           tuple((k, tuple(v)) for k, v in samples.items()) if samples else ()))
            if self._rep_sent.get(skey) == digest:
                continue  # unchanged since its last partial
            self._rep_sent[skey] = digest
            out.append(self._partial("rep", rep, w, partition, version, parts, team))
        for scope, scope_id in before - present:
            out.append(self._tombstone(scope, scope_id, kind, start, partition))
            self._rep_sent.pop((partition, scope_id, kind, start), None)
        self._published[pkey] = present

    def _release(self, out: list[Record], pkey: tuple[int, int, float], w: WindowPart,
                 version: int, now: float) -> None:
        """The held team partials of a window, with the organisation's, from their parts now."""
        index = self._index.get(pkey)
        held = self._held.pop(pkey, set())
        self._teams_sent[pkey] = now
        if index is None:
            return
        partition = pkey[0]
        for team in held:
            parts = index.team_parts.get(team)
            if parts is not None:
                out.append(self._partial("team", team, w, partition, version, parts))
        out.append(self._partial("org", ORG_ID, w, partition, version, index.org))

    def _tombstone(self, scope: str, scope_id: str, kind: int, start: float, source: int) -> Record:
        return (self.rollup_topic, partial_key(scope, scope_id, kind, start, source), None,
                scope_partition(scope_id, self.partitions))

    def _partial(self, scope: str, scope_id: str, w: WindowPart, source: int, version: int,
                 parts: Parts, team: str | None = None) -> Record:
        partial = make_partial(scope, scope_id, w.kind, w.start, w.end, source, version, parts, team,
                               self._epoch)
        return (
            self.rollup_topic,
            partial_key(scope, scope_id, w.kind, w.start, source),
            ENCODER.encode(partial),
            scope_partition(scope_id, self.partitions),
        )


def _digest(reps: dict, teams: dict, org: Parts) -> int:
    """What a window's partials carry, as one hash (order-independent)."""
    def one(parts: Parts) -> tuple:
        return (frozenset(parts.sums.items()),
                frozenset((k, tuple(v)) for k, v in parts.samples.items()))
    return hash((frozenset((k, one(p)) for k, p in reps.items()),
                 frozenset((k, one(p)) for k, p in teams.items()), one(org)))


def _label(state: PartitionState, rep: str, entries: list[tuple[str, Parts]]) -> str:
    """The team label of a rep's one series: the team its events name; when they name several
    in one window, its roster team, else the one with most activity."""
    if len(entries) == 1:
        return entries[0][0]
    roster = state.team_of(rep)
    if roster != UNASSIGNED:
        return roster
    return max(entries, key=lambda e: (sum(e[1].sums.values()), e[0]))[0]

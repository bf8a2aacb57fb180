"""Windows of the partition state: their sums, the pending hits folded into them, expiry.

A key (kpi, rep, team, *dims) is one tuple in every window that has it (``_keys``): the fast
path makes a new tuple per hit, and each minute's first one would otherwise stay in the
windows of every kind it was folded into first. The table forgets the keys of dropped windows
when it has grown to twice what the windows held at its last pruning.

The fast path accumulates hits per (event-time minute, first open window kind) and folds them
into the windows only when something reads them (:meth:`Windows._fold`). Windows are dropped
two grace periods after they end by the caller's wall clock (see :meth:`Windows.expire`), dedup
minutes a horizon after the watermark, leads after their horizons (``metrics.leads``).
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from itertools import repeat
from operator import is_

from metrics.windows import ALL_KIND_INDICES, WINDOW_KINDS

#: Changed (rep, team) pairs kept (in their groups) between two reads of the publisher, over
#: all windows of a partition; past this every changed window is read whole (a long backlog,
#: where every rep changes anyway), and nothing more is kept until the next read.
TOUCHED_KEYS_MAX = 262_144



class WindowPart:
    """Sums of every stored KPI in one window: key (kpi, rep, team, *dims) -> value."""

    __slots__ = ("kind", "start", "end", "values", "samples", "stamp", "key")

    def __init__(self, kind: int, start: float, end: float, stamp: int = -1) -> None:
        self.kind = kind
        self.start = start
        self.end = end
        self.values: dict[tuple, float] = {}
        #: exact observations of sample series (e.g. lead response seconds), keyed
        #: (series, rep, team): the source of quantile sketches, and retractable
        self.samples: dict[tuple, list[float]] = {}
        self.stamp = stamp
        self.key = f"w/{WINDOW_KINDS[kind]}/{int(start)}"


class Windows:
    """Windows, folding and expiry of :class:`metrics.state.PartitionState`."""

    @property
    def windows(self) -> dict[tuple[int, float], WindowPart]:
        """Live windows by (kind, start), with every applied hit folded in. Read, don't change."""
        self._fold_pending()
        return self._windows

    def changed_size(self) -> int:
        """How many keys the windows that changed since the publisher's last read hold, those
        that pending hits will change included, without folding them: what reading the changed
        windows whole costs (``streams.pacing.Rounds``: a round's cost known before it runs)."""
        windows = self._windows
        wkeys = set(self.changed_windows)
        new: dict[tuple[int, float], int] = {}  # a window not made yet: its largest bucket
        bounds_all = self.calendar.bounds_all
        for (minute, first_open), bucket in self._pending.items():
            bounds = bounds_all(minute * 60.0)
            for kind in range(first_open, len(bounds)):
                wkey = (kind, bounds[kind][0])
                if wkey in windows:
                    wkeys.add(wkey)
                elif new.get(wkey, 0) < len(bucket):
                    new[wkey] = len(bucket)
        return sum(new.values()) + sum(len(w.values) for k in wkeys if (w := windows.get(k)) is not None)

    def _window(self, kind: int, start: float, end: float) -> WindowPart:
        wpart = self._windows.get((kind, start))
        if wpart is None:
            wpart = self._windows[(kind, start)] = WindowPart(kind, start, end)
            self._next_window_expiry = min(self._next_window_expiry, end + 2 * self.grace)
        return wpart

    def _open(self, end: float, src_wm: float) -> bool:
        """Whether a window ending at ``end`` still takes an event whose input partition has
        reached ``src_wm``: within the grace period by that partition's own clock."""
        return end + self.grace > src_wm

    def _first_open_kind(self, t: float, src_wm: float) -> int:
        """Index of the smallest window kind of ``t`` still open (see :meth:`_open`)."""
        for kind, (_, end) in enumerate(self.calendar.bounds_all(t)):
            if self._open(end, src_wm):
                return kind
        return len(WINDOW_KINDS)

    def _fold_pending(self) -> None:
        """Move the accumulated hits into their windows (see :meth:`apply`)."""
        if self._pending:
            self._fold(self._pending)
            self._pending.clear()  # in place: apply() holds a reference to it

    def _fold(self, pending: dict[tuple[int, int], dict[tuple, float]]) -> None:
        """Add each (minute, first open kind) bucket of hits to the windows of every kind.

        Hierarchically: a bucket goes into its minute window and into a per-hour sum; each
        hour's sum then goes into the hour, day, week, month and quarter windows once. Keys
        repeat far more within an hour than within a minute, so this costs about two dict
        updates per hit instead of six. The hour sums are keyed by the exact windows they feed
        (every kind's start), so no assumption about how windows nest is needed.
        """
        bounds_all = self.calendar.bounds_all
        hourly: dict[tuple, tuple[tuple, dict[tuple, float]]] = {}
        for (minute, first_open), bucket in pending.items():
            bounds = bounds_all(minute * 60.0)
            if first_open == 0:
                self._add_hits(0, bounds[0], bucket, {(k[1], k[2]) for k in bucket})
                first_open = 1
            hkey = (first_open, *(b[0] for b in bounds[1:]))
            entry = hourly.get(hkey)
            if entry is None:
                hourly[hkey] = (bounds, dict(bucket))
                continue
            acc = entry[1]
            get = acc.get
            for key, value in bucket.items():
                acc[key] = get(key, 0.0) + value
        for (first_open, *_), (bounds, acc) in hourly.items():
            who = {(k[1], k[2]) for k in acc}  # once for the five kinds it feeds
            self._add_hits_all(range(first_open, len(WINDOW_KINDS)), bounds, acc, who)

    def _add_hits(self, kind: int, bounds: tuple[float, float], hits: dict[tuple, float],
                  who: set[tuple[str | None, str | None]]) -> None:
        """Add summed hits to one window, skipping KPIs not kept in windows of that kind;
        ``who``: their (rep, team) pairs."""
        kinds_of = self.catalog.kinds_of
        every = ALL_KIND_INDICES
        wpart = self._window(kind, *bounds)
        values = wpart.values
        get = values.get
        shared = self._keys
        for key, value in hits.items():
            kinds = kinds_of[key[0]]
            if kinds is every or kind in kinds:
                old = get(key)
                if old is None:  # a key new to the window: the tuple every window shares
                    values[shared.setdefault(key, key)] = value
                else:
                    values[key] = old + value
        self._mark(wpart, who)

    def _add_hits_all(self, kinds: range, bounds: tuple, hits: dict[tuple, float],
                      who: set[tuple[str | None, str | None]]) -> None:
        """:meth:`_add_hits` to the windows of several kinds in one pass over the hits: each
        window gets the same additions in the same order, and a hit's KPI is looked up once."""
        if len(kinds) == 1:
            self._add_hits(kinds[0], bounds[kinds[0]], hits, who)
            return
        kinds_of = self.catalog.kinds_of
        every = ALL_KIND_INDICES
        wparts = [self._window(kind, *bounds[kind]) for kind in kinds]
        targets = [(kind, wpart.values) for kind, wpart in zip(kinds, wparts, strict=True)]
        dicts = [values for _, values in targets]
        shared = self._keys
        for key, value in hits.items():
            kept = kinds_of[key[0]]
            if kept is every:
                for values in dicts:
                    old = values.get(key)
                    if old is None:  # new to the window: the tuple every window shares
                        values[shared.setdefault(key, key)] = value
                    else:
                        values[key] = old + value
            else:
                for kind, values in targets:
                    if kind in kept:
                        old = values.get(key)
                        if old is None:
                            values[shared.setdefault(key, key)] = value
                        else:
                            values[key] = old + value
        for wpart in wparts:
            self._mark(wpart, who)

    def _mark(self, part: WindowPart, who: Collection[tuple] | None = None) -> None:
        """``part`` changed: for its snapshot, and for the roll-up partials, which are captured
        apart from snapshots. ``who``: the (rep, team) pairs of the keys (or sample keys) that
        changed, as their keys name them (kept by reference until the publisher reads them);
        None: anything may have changed."""
        key = part.key
        if key not in self._dirty_parts:
            self._dirty_parts[key] = part
        wkey = (part.kind, part.start)
        self.changed_windows.add(wkey)
        touched = self.touched
        if who is None or self.touched_keys > TOUCHED_KEYS_MAX:
            touched[wkey] = None
            return
        groups = touched.get(wkey, ())
        if groups is None:
            return
        self.touched_keys += len(who)
        if self.touched_keys > TOUCHED_KEYS_MAX:
            # a long backlog between two reads: read the changed windows whole
            for k in touched:
                touched[k] = None
            touched[wkey] = None
        elif groups:
            groups.append(who)  # type: ignore[union-attr]
        else:
            touched[wkey] = [who]

    def _mark_all(self, wkeys: Iterable[tuple[int, float]]) -> None:
        """These windows changed in ways no key says (a restore, a rep's team or targets): the
        publisher reads them whole."""
        for wkey in wkeys:
            self.changed_windows.add(wkey)
            self.touched[wkey] = None

    def _mark_computed(self, wkeys: Iterable[tuple[int, float]], what: tuple) -> None:
        """Computed values of these windows changed (``what``: a marker of
        :mod:`metrics.touched`): they are read again, the sums not."""
        touched = self.touched
        for wkey in wkeys:
            self.changed_windows.add(wkey)
            groups = touched.get(wkey, ())
            if groups is None:
                continue
            if not groups:
                touched[wkey] = [what]
            elif not any(map(is_, groups, repeat(what))):  # the scan in C: groups pile up
                groups.append(what)  # type: ignore[union-attr]
    # -- expiry --------------------------------------------------------------------------
    def earliest_end(self) -> float:
        """The earliest end of a window that may still be published: the state's, and those
        expired and not yet captured by the publisher (inf when there are none). Folds the
        pending hits (they may make a window)."""
        inf = float("inf")
        return min(min((w.end for w in self.windows.values()), default=inf),
                   min((w.end for w in self.expired_windows), default=inf))

    def expire(self, now: float | None = None) -> int:
        """Drop windows and dedup minutes that can no longer matter.

        A window is dropped two grace periods after it ended by ``now`` (the caller's wall
        clock; the watermark when not given). Only windows current by the wall clock, and the
        one before, are ever exported, so this changes no exported value, while a backlog, whose
        input partitions run ahead of each other, never loses a window that is still filling.
        Dedup minutes go a horizon after the partition's watermark. Cheap when nothing is due:
        it keeps the earliest moment anything expires. Settled leads are forgotten at most
        once per minute of watermark (that changes no result: the next event of such a lead
        would forget it first, see :meth:`_apply_leads`). Waiting leads are forgotten a wait horizon after their creation
        (behind the watermark), every call, cheaply (the next event of such a lead would
        forget it anyway, see :meth:`_apply_leads`).
        """
        self._fold_pending()
        wm = self.watermark
        clock = wm if now is None else now
        self.leads.expire_waiting(wm - self.wait_horizon)
        if wm >= self._leads_expired_at + 60.0:
            self._leads_expired_at = wm
            self.leads.expire(wm - self.horizon)
        dropped = 0
        if wm >= self.dedup.next_expiry:
            minutes = len(self.dedup.chunks)
            for key in self.dedup.expire(wm):
                self._forget(key)
            dropped += minutes - len(self.dedup.chunks)
        if clock < self._next_window_expiry:
            return dropped
        for wkey, wpart in list(self._windows.items()):
            if wpart.end + 2 * self.grace <= clock:
                del self._windows[wkey]
                self._forget(wpart.key)
                self.changed_windows.discard(wkey)
                self.touched.pop(wkey, None)
                self.expired_windows.append(wpart)
                dropped += 1
        self._next_window_expiry = min(
            (w.end + 2 * self.grace for w in self._windows.values()), default=float("inf")
        )
        if len(self._keys) > 2 * self._keys_kept + 1024:  # keys of dropped windows: forget them
            self._keys = {k: k for w in self._windows.values() for k in w.values}
            self._keys_kept = len(self._keys)
        return dropped

    def _forget(self, key: str) -> None:
        self._dirty_parts.pop(key, None)
        self._deleted.add(key)

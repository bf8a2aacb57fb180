"""The fast path: applying a KPI-lane bundle (see :mod:`metrics.state` for why it looks so).

Per event: re-forwards and producer duplicates are skipped (:mod:`metrics.state.sightings`),
events older than the dedup horizon and events whose every window closed are counted late,
labels are admitted (:mod:`metrics.state.labels`), a teamless event takes its rep's team from
the roster (:mod:`metrics.state.roster`), and the catalog's generated accumulator
(``metrics.rules``) adds the event's KPI hits to a pending bucket per (event-time minute,
first open window kind), folded into the windows when they are read
(:mod:`metrics.state.windows`). Records replayed after a cut-short snapshot take the exact
per-window path instead (:mod:`metrics.state.replay`), with the same accumulator.
"""

from __future__ import annotations

from typing import Any

from metrics.events import DATA_TYPES, LANE_LEAD, Bundle, RepUpdated, UserEvent
from metrics.labels import REP, TEAM
from metrics.state.sightings import SEQ_BITS
from metrics.windows import WINDOW_KINDS

#: event class -> its type name
TYPE_OF = {cls: name for name, cls in DATA_TYPES.items()}


class FastPath:
    """:meth:`apply` and :meth:`skip` of :class:`metrics.state.PartitionState`."""

    def apply(self, bundle: Bundle, offset: int) -> None:
        """Apply one forwarded bundle, the record at ``offset`` of this partition.

        Fast path: an event adds its KPI hits to an accumulator keyed by (event-time minute,
        first window kind still open, key). The accumulator lives across bundles and is folded
        into the windows (:meth:`_fold`) only when something reads them: a snapshot, a scrape,
        expiry, or the exact path. All window boundaries are minute-aligned, so events of one
        minute share every window, and the result is the same as folding each event at once.
        Records replayed after a cut-short snapshot take the exact per-window path.
        """
        if offset <= self.meta_stamp or offset <= self.applied:
            return  # replayed record: already in the durable state
        replaying = offset <= self.max_stamp
        if bundle.lane == LANE_LEAD:
            self._apply_leads(bundle, offset, replaying)
            self.applied = offset
            return
        src = (bundle.topic, bundle.partition, bundle.lane)
        src_hw = self.sources.get(src, -1)
        src_wm = self.source_times.get(src, float("-inf"))
        wm = self.watermark  # kept in step with self.watermark (only this loop moves it)
        grace = self.grace
        pending = self._pending
        base_seq = offset << SEQ_BITS
        counts: dict[type, int] = {}
        horizon = self.horizon
        gated = self.label_caps is not None
        reps_in, teams_in = self.labels[REP], self.labels[TEAM]
        admit = self._admit
        roster = self.roster
        plans = self._plans
        first = self.dedup.first  # producer duplicates (metrics.dedup)
        # the bucket of the last (minute, first open kind): events of a bundle mostly share it
        last_minute: int | None = None  # None: no bucket at hand
        last_open = 0
        bucket: dict[tuple, float] = {}
        events = bundle.events
        # A bundle's offsets ascend: unless its first is at or below the source's high-water
        # mark, none of its events was forwarded before (no check per event).
        again = bool(events) and events[0].offset <= src_hw
        for index, ev in enumerate(events):
            t = ev.time
            if again:
                if ev.offset <= src_hw and self._forwarded_again(ev, t, src):
                    continue
                src_hw = ev.offset
            if t <= wm - horizon:
                self.late += 1
                continue
            minute = int(t // 60.0)
            if not first(ev.source, ev.id, 0, minute, base_seq | index, wm):
                self.duplicates += 1
                continue
            if t > wm:
                self.watermark = wm = t
            if t > src_wm:
                src_wm = t
            data = ev.data
            cls = type(data)
            if cls is UserEvent:  # a user catalog's event type (metrics.user_events)
                data = data.unwrap()  # type: ignore[attr-defined]
                if data is None:
                    continue  # a type this worker's catalog does not declare
                cls = type(data)
            counts[cls] = counts.get(cls, 0) + 1
            plan = plans.get(cls)
            if plan is None:
                plan = plans[cls] = self._plan(cls)
            accumulate, hook, has_rep, has_team = plan
            if cls is RepUpdated:
                self._roster_update(data, t)  # type: ignore[arg-type]
            if accumulate is None:
                continue
            rep = data.rep_id if has_rep else None  # type: ignore[attr-defined]
            team = data.team_id if has_team else None  # None: resolved from the roster when read
            first_open = 0  # windows are nested: if a kind is late, so are all smaller ones
            if (minute + 1) * 60.0 + grace <= src_wm:
                first_open = self._first_open_kind(t, src_wm)
                if first_open == len(WINDOW_KINDS):
                    self.late += 1
                    continue
            if gated:  # one dict lookup per label while the value is admitted, which also
                # gives the admitted string itself: keys share one str per label value instead
                # of holding each event's decoded copy (docs/benchmark.md, "Memory of a worker")
                known = reps_in.get(rep) if rep is not None else None
                if rep is not None and known is None:
                    rep, team = self._admit_rep(rep, team)
                else:
                    rep = known
                    if team is not None:
                        team = teams_in.get(team) or admit(TEAM, team)
            if team is None and rep is not None:
                entry = roster.get(rep)
                if entry is not None:  # the team in effect at the event's time (a label already)
                    team = entry.team if t >= entry.time else entry.team_at(t)
            if hook is not None:
                hook(self, data, t, rep, team, offset, replaying, src_wm)
                last_minute = None  # it may have folded the pending hits
            if replaying:
                self._apply_slow(data, accumulate, rep, team, t, offset, replaying, src_wm)
                last_minute = None  # folded the pending hits
                continue
            if minute != last_minute or first_open != last_open:
                last_minute, last_open = minute, first_open
                bucket = pending.get((minute, first_open))  # type: ignore[assignment]
                if bucket is None:
                    bucket = pending[(minute, first_open)] = {}
            if accumulate(data, rep, team, bucket, admit) and first_open:
                self.late += 1
        for cls, n in counts.items():
            self.processed[TYPE_OF[cls]] += n
        if events and not again:
            src_hw = events[-1].offset
        if src_hw >= 0:
            self.sources[src] = src_hw
            self.source_times[src] = src_wm
        self.applied = offset

    def _plan(self, cls: type) -> tuple[Any, Any, bool, bool]:
        """What the fast path does with an event of data type ``cls``, looked up once per type:
        (its accumulator or None, its hook or None, whether it has ``rep_id``, ``team_id``)."""
        fields = cls.__struct_fields__  # type: ignore[attr-defined]
        return (self.catalog.accumulators.get(TYPE_OF[cls]), self._hooks.get(cls),
                "rep_id" in fields, "team_id" in fields)

    def skip(self, offset: int) -> None:
        """Record ``offset`` as applied without effect: an undecodable record, dead-lettered by
        the caller. A replay then skips it like any applied record."""
        if offset > self.applied:
            self.applied = offset

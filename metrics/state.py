"""The state of one aggregate partition: windowed KPI sums, the roster, and what was applied.

Why it looks like this (see README, "Exactness"):

* State lives in memory and is applied per event; it is made durable in *parts* (one per live
  window, one per event-time minute of dedup ids, one ``meta``) that are written to a changelog
  only when dirty, on an interval. A part records the partition offset it reflects (its
  ``stamp``); ``meta`` is written after every part, only deletions of expired parts after it.
* After a crash the consumer resumes at or before the last durable snapshot. A record at or
  below ``meta``'s stamp is skipped whole. A record above it but at or below a part's stamp (a
  snapshot that was cut short) is applied only to the parts that do not yet hold it. So each
  record counts exactly once, whatever the moment of the crash.
* The ingest stage may forward a source record again (after its own crash or a rebalance).
  Source offsets are forwarded in order, so a per-source-partition high-water mark in ``meta``
  recognises every re-forwarded event, with no time horizon.
* Producer duplicates (same ``source`` + ``id``, whatever their ``time``) are recognised by a
  packed 128-bit hash of the pair (``metrics.dedup``), remembered for ``dedup_horizon`` seconds
  of event time after the minute of its first sighting. Events older than the horizon behind
  the watermark are counted as late, because a duplicate of them could no longer be
  recognised. The first sighting's sequence number is written beside the hash, so a replayed
  record is not mistaken for a duplicate of itself.
* Lateness is judged against event time, never the wall clock, so a replay after a crash makes
  the same decisions as the first pass: an event is late for a window that closed more than the
  grace period before the newest event already read from the event's own input partition.
  Input partitions are read at different paces (a backlog especially), so a partition-wide
  clock would make an on-time event of a slower partition "late". Windows are dropped two
  grace periods after they end by the wall clock the caller passes to :meth:`expire`: only
  current windows are exported, so that changes no exported value, and a backlog never loses a
  window that is still filling.
* A lead still waiting a wait horizon after its creation (event time, behind the partition's
  watermark) is forgotten, and so is a settled one (answered, lost or converted) a dedup horizon
  after its last event. Each lead event first forgets its lead if it is such a lead, so the
  outcome does not depend on when :meth:`expire` (which forgets them all, for the gauges and
  the memory) happens to run: a replay decides the same.
* Label values are bounded (``metrics.labels``): at most a cap of distinct reps, teams and
  values per dimension are admitted, in event order, and the rest is keyed ``other``. The
  admitted sets are parts of their own (``g/<label>``), written before ``meta`` when they grew:
  a set only grows and, once full, never admits again, so a restored set (even one ahead of
  ``meta``) gives every replayed event its first-pass answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

import msgspec

from metrics.catalog import Catalog
from metrics.dedup import ID_PART, DedupLedger
from metrics.events import DATA_TYPES, LANE_LEAD, Bundle, RepUpdated, UserEvent
from metrics.extras import hooks
from metrics.labels import OTHER, REP, TEAM, LabelCaps, same
from metrics.leads import (
    LEAD_LANE_TYPES,
    LEAD_WAIT_HORIZON_SECONDS,
    Lead,
    LeadBook,
    Response,
    is_touch,
    lead_part,
)
from metrics.opportunities import OpportunityBook
from metrics.windows import ALL_KIND_INDICES, WINDOW_KINDS, Calendar

UNASSIGNED = "unassigned"
ROSTER_HISTORY = 16  # earlier (time, team) entries kept per rep
_SEQ_BITS = 20  # events per bundle < 2**20; sequence = offset << 20 | index


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


class _WindowRecord(msgspec.Struct, array_like=True):
    stamp: int
    kind: int
    start: float
    end: float
    keys: list[tuple]  # (kpi, rep, team, *dims), parallel to values
    values: list[float]
    samples: list[tuple[str, str | None, str, list[float]]] = []


class _LeadRecord(msgspec.Struct, array_like=True):
    stamp: int
    leads: dict[str, Lead]


class _LabelsRecord(msgspec.Struct, array_like=True):
    stamp: int
    label: str
    values: list[str]  # admitted, in the order they were admitted


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


class _MetaRecord(msgspec.Struct, array_like=True):
    stamp: int
    watermark: float
    roster: dict[str, RosterEntry]
    sources: list[tuple[str, int, int, int]]
    source_times: list[tuple[str, int, int, float]] = []


class _Stamped(msgspec.Struct, array_like=True):
    """The leading field every part record shares; the rest is skipped when decoding."""

    stamp: int


_ENC = msgspec.msgpack.Encoder()
_DEC_STAMP = msgspec.msgpack.Decoder(_Stamped)
_DEC_WINDOW = msgspec.msgpack.Decoder(_WindowRecord)
_DEC_META = msgspec.msgpack.Decoder(_MetaRecord)
_DEC_LEADS = msgspec.msgpack.Decoder(_LeadRecord)
_DEC_LABELS = msgspec.msgpack.Decoder(_LabelsRecord)
_LEAD_LANE_SALT = 0x9E3779B97F4A7C15  # lead-lane copies of an event are deduplicated apart
RESPONSE_SERIES = "lead_response_seconds"

META_KEY = "meta"


def part_stamp(raw: bytes) -> int:
    """The partition offset a serialised part (any kind) reflects, without decoding the rest."""
    return _DEC_STAMP.decode(raw).stamp
TYPE_OF = {cls: name for name, cls in DATA_TYPES.items()}


class PartitionState:
    """Everything one aggregate partition knows. Pure: no I/O, no clock."""

    def __init__(
        self,
        catalog: Catalog,
        calendar: Calendar,
        *,
        grace_seconds: float = 300.0,
        dedup_horizon_seconds: float = 86400.0,
        waited: Any = None,
        lead_wait_horizon_seconds: float = LEAD_WAIT_HORIZON_SECONDS,
        label_caps: LabelCaps | None = None,
    ) -> None:
        self.catalog = catalog
        self.calendar = calendar
        self.grace = grace_seconds
        self.horizon = dedup_horizon_seconds
        self.wait_horizon = lead_wait_horizon_seconds
        self._windows: dict[tuple[int, float], WindowPart] = {}  # see :attr:`windows`
        #: producer duplicates: identities remembered for the horizon (metrics.dedup)
        self.dedup = DedupLedger(dedup_horizon_seconds)
        self.roster: dict[str, RosterEntry] = {}
        self.sources: dict[tuple[str, int, int], int] = {}
        #: newest event time read per input partition: lateness is judged against the event's
        #: own input partition, so it does not depend on how partitions interleave
        self.source_times: dict[tuple[str, int, int], float] = {}
        self.leads = LeadBook(waited) if waited is not None else LeadBook()
        self.lead_stamps: dict[int, int] = {}  # lead part -> stamp
        #: leads whose response was filed, changed or withdrawn since the last drain
        self._response_changes: set[str] = set()
        #: per-opportunity state (metrics.opportunities), persisted in parts ``o/<n>``
        self.opportunities = OpportunityBook()
        #: event class -> what it does besides the catalog's sums (opportunities, sampled fields)
        self._hooks = hooks(catalog)
        self.watermark = float("-inf")
        self._next_window_expiry = float("-inf")  # the earliest clock at which a window expires
        self._leads_expired_at = float("-inf")
        #: KPI hits of the bundle being applied, not yet in their windows:
        #: (minute, first open kind) -> {(kpi, rep, team, *dims): value}
        self._pending: dict[tuple[int, int], dict[tuple, float]] = {}
        self.applied = -1  # last partition offset applied
        self.meta_stamp = -1  # stamp of the durable meta: records <= it are skipped whole
        self.max_stamp = -1  # largest part stamp: records <= it may be partly applied
        self._dirty_parts: dict[str, WindowPart] = {}
        self._deleted: set[str] = set()
        #: for the publisher of roll-up partials and snapshots: windows changed since it last
        #: took them, and windows dropped by expiry (their final values)
        self.changed_windows: set[tuple[int, float]] = set()
        self.expired_windows: list[WindowPart] = []
        # Health counters since the last drain (the caller sums them across partitions).
        self.processed: Counter[str] = Counter()
        self.duplicates = 0
        self.late = 0
        #: (topic, partition, high-water mark, offset) of sources whose offsets went backwards
        self.offset_resets: list[tuple[str, int, int, int]] = []
        #: bounded cardinality (``metrics.labels``): label -> admitted values (value -> value),
        #: persisted in parts ``g/<label>``; without caps every value is admitted, unrecorded
        self.label_caps = label_caps
        self.labels: dict[str, dict[str, str]] = {REP: {}, TEAM: {}}
        self._dirty_labels: set[str] = set()
        self._admit = self.admit if label_caps is not None else same
        #: label -> values mapped to ``other`` since the last drain (per event and label)
        self.overflow: Counter[str] = Counter()

    @property
    def windows(self) -> dict[tuple[int, float], WindowPart]:
        """Live windows by (kind, start), with every applied hit folded in. Read, don't change."""
        self._fold_pending()
        return self._windows

    # -- applying ------------------------------------------------------------------------
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
        accumulators = self.catalog.accumulators
        grace = self.grace
        pending = self._pending
        base_seq = offset << _SEQ_BITS
        counts: dict[type, int] = {}
        horizon = self.horizon
        gated = self.label_caps is not None
        reps_in, teams_in = self.labels[REP], self.labels[TEAM]
        admit = self._admit
        special = self._hooks
        roster = self.roster
        first = self.dedup.first  # producer duplicates (metrics.dedup)
        for index, ev in enumerate(bundle.events):
            t = ev.time
            if ev.offset <= src_hw and self._forwarded_again(ev, t, src):
                continue
            src_hw = ev.offset
            if t <= self.watermark - horizon:
                self.late += 1
                continue
            minute = int(t // 60.0)
            if not first(ev.source, ev.id, 0, minute, base_seq | index, self.watermark):
                self.duplicates += 1
                continue
            if t > self.watermark:
                self.watermark = t
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
            if cls is RepUpdated:
                self._roster_update(data, t)  # type: ignore[arg-type]
            etype = TYPE_OF[cls]
            accumulate = accumulators.get(etype)
            if accumulate is None:
                continue
            rep = getattr(data, "rep_id", None)
            team = getattr(data, "team_id", None)  # None: resolved from the roster when read
            first_open = 0  # windows are nested: if a kind is late, so are all smaller ones
            if (minute + 1) * 60.0 + grace <= src_wm:
                first_open = self._first_open_kind(t, src_wm)
                if first_open == len(WINDOW_KINDS):
                    self.late += 1
                    continue
            if gated:  # one dict lookup per label while the value is admitted
                if rep is not None and rep not in reps_in:
                    rep, team = self._admit_rep(rep, team)
                elif team is not None and team not in teams_in:
                    team = admit(TEAM, team)
            if team is None and rep is not None:
                entry = roster.get(rep)
                if entry is not None:  # the team in effect at the event's time (a label already)
                    team = entry.team if t >= entry.time else entry.team_at(t)
            hook = special.get(cls)
            if hook is not None:
                hook(self, data, t, rep, team, offset, replaying, src_wm)
            if replaying:
                self._apply_slow(data, accumulate, rep, team, t, offset, replaying, src_wm)
                continue
            bucket = pending.get((minute, first_open))
            if bucket is None:
                bucket = pending[(minute, first_open)] = {}
            if accumulate(data, rep, team, bucket, admit) and first_open:
                self.late += 1
        for cls, n in counts.items():
            self.processed[TYPE_OF[cls]] += n
        if src_hw >= 0:
            self.sources[src] = src_hw
            self.source_times[src] = src_wm
        self.applied = offset

    def skip(self, offset: int) -> None:
        """Record ``offset`` as applied without effect: an undecodable record, dead-lettered by
        the caller. A replay then skips it like any applied record."""
        if offset > self.applied:
            self.applied = offset

    def _apply_leads(self, bundle: Bundle, offset: int, replaying: bool) -> None:
        """Lead-lane events: update lead state, file response changes into windows."""
        src = (bundle.topic, bundle.partition, bundle.lane)
        src_hw = self.sources.get(src, -1)
        base_seq = offset << _SEQ_BITS
        book = self.leads
        gated = self.label_caps is not None
        reps_in, teams_in = self.labels[REP], self.labels[TEAM]
        for index, ev in enumerate(bundle.events):
            t = ev.time
            if ev.offset <= src_hw and self._forwarded_again(ev, t, src, _LEAD_LANE_SALT):
                continue
            src_hw = ev.offset
            if t <= self.watermark - self.horizon:
                continue  # counted late in the KPI lane
            if not self._first_sighting(ev, t, base_seq | index, _LEAD_LANE_SALT):
                continue
            if t > self.watermark:
                self.watermark = t
            lead_id = getattr(ev.data, "lead_id", None)
            if lead_id is None or ev.type not in LEAD_LANE_TYPES:
                continue
            if gated:
                # Admit the labels a response may carry (the touch's rep, a team) here, where
                # a replay passes too, even when this lead's part already holds the record.
                data = ev.data
                team = getattr(data, "team_id", None)
                if team is not None and team not in teams_in:
                    self.admit(TEAM, team)
                rep = getattr(data, "rep_id", None)
                if rep is not None and rep not in reps_in and is_touch(data):
                    self.admit(REP, rep)
            if replaying and self.lead_stamps.get(lead_part(lead_id), -1) >= offset:
                continue  # this lead's part already holds the record
            old, new = book.apply(lead_id, ev.data, t, self.watermark - self.wait_horizon,
                                  self.watermark - self.horizon)
            if old is not None:
                self._file_response(old, offset, replaying, retract=True)
            if new is not None:
                self._file_response(new, offset, replaying, retract=False)
            if old is not None or new is not None:
                self._response_changes.add(lead_id)
        if src_hw >= 0:
            self.sources[src] = src_hw

    def _forwarded_again(self, ev: Any, t: float, src: tuple, salt: int = 0) -> bool:
        """An event at or below its source partition's high-water mark: forwarded again by the
        ingest stage (after its crash or a rebalance), or a new record because the source's
        offsets went backwards (the topic deleted and recreated, the group reset).

        A re-forward is an event already sighted: its identity is in the dedup minutes, which
        are durable with the high-water mark. One that is not, and that would have been
        recorded (inside the dedup horizon), is new: it is processed (true duplicates are still
        recognised by their identity), and the reset is reported (KPI lane only).
        """
        if t <= self.watermark - self.horizon:
            return True  # too old to tell, and would be dropped as late anyway
        if self.dedup.known(ev.source, ev.id, salt, self.watermark):
            return True
        if not salt:
            self.offset_resets.append((src[0], src[1], self.sources.get(src, -1), ev.offset))
        return False

    def _first_sighting(self, ev: Any, t: float, seq: int, salt: int = 0) -> bool:
        """Record the event's identity; False when it is a duplicate of an earlier record, in
        any minute of the horizon (a re-sent event may carry a re-stamped ``time``)."""
        if self.dedup.first(ev.source, ev.id, salt, int(t // 60.0), seq, self.watermark):
            return True
        if not salt:
            self.duplicates += 1
        return False

    def _file_response(self, r: Response, offset: int, replaying: bool, *, retract: bool) -> None:
        # Samples and the pending sums are independent: no fold needed (stamps change only at
        # a snapshot, which folds first).
        key = (RESPONSE_SERIES, self.label_of(REP, r.rep), self.label_of(TEAM, r.team))
        for kind, (start, end) in enumerate(self.calendar.bounds_all(r.touch_time)):
            wpart = self._window(kind, start, end)
            if replaying and wpart.stamp >= offset:
                continue
            if retract:
                values = wpart.samples.get(key)
                if values and r.seconds in values:
                    values.remove(r.seconds)
            else:
                wpart.samples.setdefault(key, []).append(r.seconds)
            self._mark(wpart)

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
                self._add_hits(0, bounds[0], bucket)
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
            for kind in range(first_open, len(WINDOW_KINDS)):
                self._add_hits(kind, bounds[kind], acc)

    def _add_hits(self, kind: int, bounds: tuple[float, float], hits: dict[tuple, float]) -> None:
        """Add summed hits to one window, skipping KPIs not kept in windows of that kind."""
        kinds_of = self.catalog.kinds_of
        every = ALL_KIND_INDICES
        wpart = self._window(kind, *bounds)
        values = wpart.values
        get = values.get
        for key, value in hits.items():
            kinds = kinds_of[key[0]]
            if kinds is every or kind in kinds:
                values[key] = get(key, 0.0) + value
        self._mark(wpart)

    def _apply_slow(
        self, data: Any, accumulate: Any, rep: str | None, team: str | None, t: float, offset: int,
        replaying: bool, src_wm: float,
    ) -> None:
        # The same generated accumulator as the fast path: the same hits, and the same
        # admission of dimension values (metrics.labels), in the same order.
        hits: dict[tuple, float] = {}
        if not accumulate(data, rep, team, hits, self._admit):
            return
        kinds_of = self.catalog.kinds_of
        self._fold_pending()
        was_late = False
        for kind, (start, end) in enumerate(self.calendar.bounds_all(t)):
            if not self._open(end, src_wm):
                was_late = True
                continue
            wpart = self._window(kind, start, end)
            if replaying and wpart.stamp >= offset:
                continue
            values = wpart.values
            touched = False
            for key, value in hits.items():
                if kind in kinds_of[key[0]]:
                    values[key] = values.get(key, 0.0) + value
                    touched = True
            if touched:
                self._mark(wpart)
        if was_late:
            self.late += 1

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
            if current is None or current.team != team or current.targets != data.targets:
                # keys stored without a team are attributed by the roster when read, and
                # targets are published with the windows (metrics.targets)
                self.changed_windows.update(self._windows)
        elif (t, team) not in current.earlier:
            # an earlier change read late: it only tells who was in which team when
            current.earlier = sorted([*current.earlier, (t, team)])[-ROSTER_HISTORY:]

    # -- bounded cardinality (metrics.labels) ----------------------------------------------
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
        cap), else ``other``. Decided in event order and persisted, so a replay decides alike."""
        admitted = self.labels.get(label)
        if admitted is not None and value in admitted:
            return value  # the usual case: one dict lookup
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

    def _mark(self, part: WindowPart) -> None:
        key = part.key
        if key not in self._dirty_parts:
            self._dirty_parts[key] = part
            self.changed_windows.add((part.kind, part.start))

    # -- expiry --------------------------------------------------------------------------
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
                self.expired_windows.append(wpart)
                dropped += 1
        self._next_window_expiry = min(
            (w.end + 2 * self.grace for w in self._windows.values()), default=float("inf")
        )
        return dropped

    def _forget(self, key: str) -> None:
        self._dirty_parts.pop(key, None)
        self._deleted.add(key)

    # -- snapshots -----------------------------------------------------------------------
    @property
    def dirty(self) -> bool:
        return (
            bool(self._dirty_parts or self._deleted or self.leads.dirty_parts
                 or self.opportunities.dirty_parts or self.dedup.dirty)
            or self.applied > self.meta_stamp
        )

    def snapshot(self) -> list[tuple[str, bytes | None]]:
        """Serialise what changed since the last snapshot, ``meta`` after the parts it covers,
        then deletions (``None``) of expired parts.

        The caller writes the parts in this order to one changelog partition and, once they
        are all durable, acknowledges the records up to :attr:`applied`.
        """
        self._fold_pending()
        stamp = self.applied
        out: list[tuple[str, bytes | None]] = []
        # Windows before seen ids before leads, meta last: a snapshot cut short leaves a prefix,
        # and a replayed lead event re-files its response only into windows that lack it.
        for key in sorted(self._dirty_parts):
            part = self._dirty_parts[key]
            part.stamp = stamp
            samples = [(*k, v) for k, v in part.samples.items() if v]
            rec: Any = _WindowRecord(
                stamp, part.kind, part.start, part.end,
                list(part.values), list(part.values.values()), samples,
            )
            out.append((key, _ENC.encode(rec)))
        out.extend(self.dedup.snapshot(stamp, (stamp + 1) << _SEQ_BITS))
        for lead_part_no, leads in self.leads.parts(sorted(self.leads.dirty_parts)):
            self.lead_stamps[lead_part_no] = stamp
            out.append((f"l/{lead_part_no}", _ENC.encode(_LeadRecord(stamp, leads))))
        self.leads.dirty_parts.clear()
        out.extend(self.opportunities.parts(stamp))
        for label in sorted(self._dirty_labels):
            out.append((f"g/{label}", _ENC.encode(_LabelsRecord(stamp, label, list(self.labels[label])))))
        self._dirty_labels.clear()
        meta = _MetaRecord(
            stamp,
            self.watermark,
            self.roster,
            [(t, p, lane, o) for (t, p, lane), o in self.sources.items()],
            [(t, p, lane, w) for (t, p, lane), w in self.source_times.items()],
        )
        out.append((META_KEY, _ENC.encode(meta)))
        # Deletions of expired parts go after meta: written before it, a cut-short snapshot
        # could drop a dedup minute that the records replayed after the crash still need.
        # Expired parts that survive a crash are harmless and expire again.
        out.extend((k, None) for k in sorted(self._deleted) if k not in self._dirty_parts)
        self._dirty_parts.clear()
        self._deleted.clear()
        self.meta_stamp = stamp
        # Parts restored from a cut-short snapshot may hold records beyond this stamp: keep
        # replaying (per-part) until they are passed.
        self.max_stamp = max(self.max_stamp, stamp)
        return out

    @classmethod
    def restore(
        cls, parts: Iterable[tuple[str, bytes]], catalog: Catalog, calendar: Calendar, **kw: Any
    ) -> PartitionState:
        """Rebuild from the latest value of every part (what changelog recovery yields)."""
        state = cls(catalog, calendar, **kw)
        for key, raw in parts:
            if raw is None:
                continue
            if key == META_KEY:
                meta = _DEC_META.decode(raw)
                state.meta_stamp = meta.stamp
                state.watermark = meta.watermark
                state.roster = dict(meta.roster)
                state.sources = {(t, p, lane): o for t, p, lane, o in meta.sources}
                state.source_times = {(t, p, lane): w for t, p, lane, w in meta.source_times}
            elif key.startswith("w/"):
                w = _DEC_WINDOW.decode(raw)
                part = WindowPart(w.kind, w.start, w.end, w.stamp)
                part.values = dict(zip(map(tuple, w.keys), w.values, strict=True))
                part.samples = {tuple(r[:-1]): list(r[-1]) for r in w.samples}
                state._windows[(w.kind, w.start)] = part
                state.max_stamp = max(state.max_stamp, w.stamp)
            elif key.startswith("l/"):
                rec = _DEC_LEADS.decode(raw)
                state.leads.load(rec.leads)
                state.lead_stamps[int(key[2:])] = rec.stamp
                state.max_stamp = max(state.max_stamp, rec.stamp)
            elif key.startswith("o/"):
                state.max_stamp = max(state.max_stamp, state.opportunities.load(key, raw))
            elif key.startswith("g/"):
                g = _DEC_LABELS.decode(raw)
                state.labels[g.label] = {v: v for v in g.values}
            elif key.startswith(ID_PART):
                state.dedup.load(key, raw)
            elif key.startswith("s/"):
                state._deleted.add(key)  # a dedup minute of the former format: not readable
        state.dedup.loaded((state.meta_stamp + 1) << _SEQ_BITS)
        state.applied = state.meta_stamp
        state.max_stamp = max(state.max_stamp, state.meta_stamp)
        state.changed_windows.update(state._windows)  # publish all once: the last owner may not have
        return state

    # -- reading -------------------------------------------------------------------------
    def raw_window_values(self, kind: int, start: float) -> dict[tuple, float]:
        """Sums of one window keyed (kpi, rep, team, *dims), as stored: a team of None means
        the event named none (``rollup`` resolves it from the roster). The state's own dict:
        read it, don't change it."""
        part = self.windows.get((kind, start))
        return part.values if part is not None else {}

    def window_values(self, kind: int, start: float) -> dict[tuple, float]:
        """Sums of one window keyed (kpi, rep, team, *dims), teams resolved from the roster."""
        values = self.raw_window_values(kind, start)
        if not any(key[2] is None for key in values):
            return dict(values)
        out: dict[tuple, float] = {}
        for key, v in values.items():
            if key[2] is None:
                key = (key[0], key[1], self.team_of(key[1]), *key[3:])
            out[key] = out.get(key, 0.0) + v
        return out

    def window_samples(self, kind: int, start: float) -> dict[tuple, list[float]]:
        """Sample series of one window keyed (series, rep, team)."""
        part = self.windows.get((kind, start))
        return part.samples if part is not None else {}

    def drain_response_changes(self) -> set[str]:
        """Leads whose response was filed, changed or withdrawn since the last call (for the
        cumulative histogram, which ``count_response`` then fills once per lead)."""
        out, self._response_changes = self._response_changes, set()
        return out

    def count_response(self, lead_id: str) -> Response | None:
        """The lead's response for the cumulative histogram, labelled, if it has one that was
        not counted yet; marks it counted (a lead is counted once, whatever corrections follow)."""
        lead = self.leads.leads.get(lead_id)
        if lead is None or lead.response is None or lead.counted:
            return None
        lead.counted = True
        response = lead.response
        team = self.label_of(TEAM, response.team)
        return response if team == response.team else msgspec.structs.replace(response, team=team)

    def drain_counters(self) -> tuple[Counter[str], int, int]:
        """Health counters since the last call: processed by type, duplicates, late."""
        out = (self.processed, self.duplicates, self.late)
        self.processed = Counter()
        self.duplicates = 0
        self.late = 0
        return out

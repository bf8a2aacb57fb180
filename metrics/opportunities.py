"""Opportunities: per-opportunity state for the KPIs no single event carries.

Counts and sums of opportunity events (created, won, lost, revenue, ...) are plain catalog
entries. Two kinds of value need the opportunity's history instead (catalog entries with
``computed``):

* ``sales_cycle``: the won time minus the opportunity's created time. It is filed into the
  windows of the won time, under the won event's rep, team and dimensions, as a sample of the
  ``sales_cycle_seconds`` series (quantiles, mean) and into the computed sums (per region).
* ``open``: opportunities created and not yet won or lost at a window's end. It is not stored
  in the windows: it is counted from the book when a window is published
  (:func:`open_values`, ``metrics.extras``), so it is the pipeline at the window's end (now, for the current one).

Events arrive out of order and duplicated (duplicates are dropped before they get here). The
book keeps, per opportunity, the earliest created, won and close (won or lost) times it has
seen, by event time, so the result is the one in-order arrival gives: a won event read before
its created event files its cycle when the created event arrives, and an earlier created (or
won) event read later moves the cycle (the old one is retracted, the new one filed).

The book lives in the KPI lane of the aggregate partition: opportunity events are routed by
their rep (all carry ``rep_id``), so an opportunity's events meet when they name the same rep.
It is persisted in :data:`OPPORTUNITY_PARTS` parts (``o/<n>``) written after the windows of a
snapshot, like the lead parts, so a replayed event re-files a cycle only into windows that
lack it. A settled opportunity (won or lost) is forgotten once its last event is a dedup
horizon (at least two grace periods) behind the partition's watermark, an open one an open
horizon after its creation; each event first forgets its opportunity if it is due, so a
replay decides alike. The hourly sweep forgets the others that are due, but none that a window
that may still be published counts open (one the state holds, or one an input behind the
others may still make).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import msgspec
from xxhash import xxh3_64_intdigest

from metrics.events import OpportunityCreated, OpportunityLost, OpportunityWon
from metrics.touched import OPEN_CHANGED

if TYPE_CHECKING:  # pragma: no cover
    from metrics.state import PartitionState, WindowPart

OPPORTUNITY_PARTS = 32
#: An opportunity open this long at a window's end is not counted open there, and is forgotten
#: once no window that may still be published counts it: a year, far beyond a usual sales
#: cycle. (Relative to the window's end, not to the watermark when it is read: a window's open
#: count is a function of the events, whenever it is published.)
OPEN_HORIZON_SECONDS = 365 * 86400.0
CYCLE_SERIES = "sales_cycle_seconds"
OPPORTUNITY_TYPES = (OpportunityCreated, OpportunityWon, OpportunityLost)


def opportunity_part(opportunity_id: str) -> int:
    return xxh3_64_intdigest(opportunity_id.encode()) % OPPORTUNITY_PARTS


class Cycle(msgspec.Struct, array_like=True, frozen=True):
    """A sales cycle as filed in the windows of ``won_time``."""

    seconds: float
    won_time: float
    rep: str | None
    team: str | None
    keys: tuple[tuple, ...]  # computed sales_cycle keys (kpi, rep, team, *dims)


class Opportunity(msgspec.Struct, array_like=True):
    created: float | None = None
    open_keys: list[tuple] = []  # computed "open" keys (kpi, rep, team, *dims) of the creation
    won: float | None = None
    won_rep: str | None = None
    won_team: str | None = None
    won_keys: list[tuple] = []  # computed "sales_cycle" keys of the won event
    closed: float | None = None  # earliest won or lost
    cycle: Cycle | None = None  # what is filed in the windows

    @property
    def last_time(self) -> float:
        return max(x for x in (self.created, self.won, self.closed) if x is not None)

    def is_open(self, end: float) -> bool:
        """Created before ``end`` and not won or lost before it."""
        return (
            self.created is not None and self.created < end
            and (self.closed is None or self.closed >= end)
        )

    def wanted_cycle(self) -> Cycle | None:
        if self.created is None or self.won is None:
            return None
        return Cycle(max(0.0, self.won - self.created), self.won, self.won_rep, self.won_team,
                     tuple(map(tuple, self.won_keys)))


class _PartRecord(msgspec.Struct, array_like=True):
    stamp: int
    opportunities: dict[str, Opportunity]


_ENC = msgspec.msgpack.Encoder()
_DEC = msgspec.msgpack.Decoder(_PartRecord)


class OpportunityBook:
    """The opportunities of one partition."""

    def __init__(self, open_horizon: float = OPEN_HORIZON_SECONDS) -> None:
        self.opportunities: dict[str, Opportunity] = {}
        self.open_horizon = open_horizon
        self.dirty_parts: set[int] = set()
        self.stamps: dict[int, int] = {}  # part -> stamp of its durable copy
        self._swept_at = float("-inf")

    def apply(
        self, opportunity_id: str, data: Any, t: float, keys: list[tuple],
        settled_before: float, open_before: float,
    ) -> tuple[Cycle | None, Cycle | None, float | None]:
        """Apply one event; return (retracted cycle, filed cycle, earliest time from which the
        open count changed, or None)."""
        opp = self.opportunities.get(opportunity_id)
        if opp is not None and self._due(opp, settled_before, open_before):
            del self.opportunities[opportunity_id]
            opp = None
        if opp is None:
            opp = self.opportunities[opportunity_id] = Opportunity()
        was_open = (opp.created, opp.closed)
        if isinstance(data, OpportunityCreated):
            if opp.created is not None and opp.created <= t:
                return None, None, None
            opp.created, opp.open_keys = t, keys
        else:
            changed = False
            if opp.closed is None or t < opp.closed:
                opp.closed = t
                changed = True
            if isinstance(data, OpportunityWon) and (opp.won is None or t < opp.won):
                opp.won, opp.won_rep, opp.won_team, opp.won_keys = t, data.rep_id, data.team_id, keys
                changed = True
            if not changed:
                return None, None, None
        self.dirty_parts.add(opportunity_part(opportunity_id))
        # the open count changes at the ends after the earlier of a moved time's old and new
        # value (a close read: from the close on; an earlier creation: from it on)
        since = None
        for old_t, new_t in zip(was_open, (opp.created, opp.closed), strict=True):
            if old_t != new_t:
                moved = min(x for x in (old_t, new_t) if x is not None)
                since = moved if since is None else min(since, moved)
        wanted = opp.wanted_cycle()
        if wanted == opp.cycle:
            return None, None, since
        old, opp.cycle = opp.cycle, wanted
        return old, wanted, since

    def _due(self, opp: Opportunity, settled_before: float, open_before: float) -> bool:
        if opp.closed is not None:
            return opp.last_time < settled_before
        return opp.created is not None and opp.created < open_before

    def expire(self, settled_before: float, open_before: float) -> int:
        drop = [i for i, o in self.opportunities.items() if self._due(o, settled_before, open_before)]
        for i in drop:
            del self.opportunities[i]
            self.dirty_parts.add(opportunity_part(i))
        return len(drop)

    def open_counts(self, end: float, kind: int, kinds_of: dict[str, tuple[int, ...]]) -> dict[tuple, float]:
        """Computed ``open`` values at ``end`` for windows of ``kind``: key -> count."""
        out: dict[tuple, float] = {}
        since = end - self.open_horizon
        for opp in self.opportunities.values():
            if opp.open_keys and opp.is_open(end) and opp.created >= since:  # type: ignore[operator]
                for key in opp.open_keys:
                    key = tuple(key)
                    if kind in kinds_of[key[0]]:
                        out[key] = out.get(key, 0.0) + 1.0
        return out

    # -- snapshots --------------------------------------------------------------------------
    def parts(self, stamp: int) -> Iterator[tuple[str, bytes]]:
        """Serialised dirty parts (``o/<n>``), stamped; clears the dirty set."""
        which = sorted(self.dirty_parts)
        by_part: dict[int, dict[str, Opportunity]] = {p: {} for p in which}
        for opp_id, opp in self.opportunities.items():
            p = opportunity_part(opp_id)
            if p in by_part:
                by_part[p][opp_id] = opp
        self.dirty_parts.clear()
        for p in which:
            self.stamps[p] = stamp
            yield f"o/{p}", _ENC.encode(_PartRecord(stamp, by_part[p]))

    def load(self, key: str, raw: bytes) -> int:
        """Restore one part; its stamp."""
        rec = _DEC.decode(raw)
        self.stamps[int(key[2:])] = rec.stamp
        self.opportunities.update(rec.opportunities)
        return rec.stamp


# -- the partition state's side ----------------------------------------------------------------


def _keys(state: PartitionState, rules: Iterable[tuple[Any, Any]], data: Any, rep: str | None,
          team: str | None) -> list[tuple]:
    """The computed keys an event gives: (kpi, rep, team, *dims) of each matching entry."""
    admit = state._admit
    out = []
    for kpi, rule in rules:
        if not rule.match(data):
            continue
        out.append((kpi.name, rep, team, *rule.dims(data, admit)))
    return out


def _file(state: PartitionState, t: float, offset: int, replaying: bool, src_wm: float,
          change: Callable[[WindowPart], None], who: Collection[tuple]) -> None:
    """Apply ``change`` to every window of ``t`` that is still open and lacks this record;
    ``who``: the (rep, team) pairs of the keys it changes."""
    for kind, (start, end) in enumerate(state.calendar.bounds_all(t)):
        if not state._open(end, src_wm):
            continue
        wpart = state._window(kind, start, end)
        if replaying and wpart.stamp >= offset:
            continue
        change(wpart)
        state._mark(wpart, who)


def _file_cycle(state: PartitionState, cycle: Cycle, offset: int, replaying: bool, src_wm: float,
                sign: float) -> None:
    catalog = state.catalog
    kinds_of = catalog.kinds_of
    # samples are keyed by an explicit team (a snapshot's sample keys carry one)
    sample_key = (CYCLE_SERIES, cycle.rep, cycle.team or state.team_of(cycle.rep))
    values_of = [
        (key, sign * (cycle.seconds if catalog.by_name[key[0]].aggregation == "sum" else 1.0))
        for key in cycle.keys
    ]

    def change(wpart: WindowPart) -> None:
        values = wpart.values
        for key, v in values_of:
            if wpart.kind in kinds_of[key[0]]:
                values[key] = values.get(key, 0.0) + v
        if sign > 0:
            wpart.samples.setdefault(sample_key, []).append(cycle.seconds)
        else:
            obs = wpart.samples.get(sample_key)
            if obs and cycle.seconds in obs:
                obs.remove(cycle.seconds)

    _file(state, cycle.won_time, offset, replaying, src_wm, change,
          {(k[1], k[2]) for k in (*cycle.keys, sample_key)})


def apply_opportunity(state: PartitionState, data: Any, t: float, rep: str | None,
                      team: str | None, offset: int, replaying: bool, src_wm: float) -> None:
    """The book's part of one opportunity event (after dedup and lateness checks)."""
    book: OpportunityBook = state.opportunities
    opp_id = data.opportunity_id
    if replaying and book.stamps.get(opportunity_part(opp_id), -1) >= offset:
        return  # the opportunity's part already holds this record
    settled_before = state.watermark - max(state.horizon, 2 * state.grace)
    open_before = state.watermark - book.open_horizon
    computed = state.catalog.computed
    if isinstance(data, OpportunityCreated):
        keys = _keys(state, computed.get("open", ()), data, rep, team)
    elif isinstance(data, OpportunityWon):
        keys = _keys(state, computed.get("sales_cycle", ()), data, rep, team)
    else:
        keys = []
    old, new, since = book.apply(opp_id, data, t, keys, settled_before, open_before)
    if old is not None:
        _file_cycle(state, old, offset, replaying, src_wm, -1.0)
    if new is not None:
        _file_cycle(state, new, offset, replaying, src_wm, 1.0)
    if since is not None and "open" in computed:
        # the open count of every window ending after ``since`` changed: publish them again
        state._mark_computed((wkey for wkey, w in state._windows.items() if w.end > since),
                             OPEN_CHANGED)
    if state.watermark >= book._swept_at + 3600.0:
        book._swept_at = state.watermark
        # The sweep keeps what a window that may still be published counts open: windows
        # expire at the flush, after this, and swept by the watermark alone a window's last
        # partial said such an opportunity was not open. That is a window the state holds, or
        # one an input partition behind the others may still make: its events are late only a
        # horizon behind the watermark, so its windows end after that. (An opportunity's own
        # next event forgets it by the watermark alone, above, so a replay decides alike
        # whenever the sweeps run.)
        earliest = min(state.earliest_end(), state.watermark - state.horizon)
        book.expire(min(settled_before, earliest), min(open_before, earliest - book.open_horizon))


def sample_fields(state: PartitionState, samplers: tuple[Any, ...], data: Any, t: float,
                  rep: str | None, team: str | None, offset: int, replaying: bool,
                  src_wm: float) -> None:
    """Sampled fields of one event (catalog quantiles and means with event types)."""
    hits = [(s.series, s.value(data)) for s in samplers if s.match(data)]
    if hits:
        def update(samples: dict, who: tuple, kind: int) -> None:
            for series, value in hits:
                samples.setdefault((series, *who), []).append(value)

        file_samples(state, t, rep, team, offset, replaying, src_wm, update)


def file_samples(state: PartitionState, t: float, rep: str | None, team: str | None, offset: int,
                 replaying: bool, src_wm: float, update: Callable[[dict, tuple, int], None]) -> None:
    """``update(samples, (rep, team), kind)`` of every window of ``t`` that takes the record.
    Sample keys carry an explicit team (a snapshot's do): None is the rep's roster team."""
    who = (rep, team if team is not None else state.team_of(rep))
    _file(state, t, offset, replaying, src_wm, lambda w: update(w.samples, who, w.kind), (who,))


def open_values(state: PartitionState, wpart: WindowPart) -> dict[tuple, float]:
    """The computed ``open`` counts at the window's end (``metrics.extras``)."""
    if "open" not in state.catalog.computed:
        return {}
    return state.opportunities.open_counts(wpart.end, wpart.kind, state.catalog.kinds_of)

"""`GET /metrics`, the KPI families: rendered from the readout at scrape time, incrementally.

No client object is touched per event. At each scrape the renderer takes the current window of
every kind (by the wall clock, in the organisation's time zone) from the readout
(:mod:`streams.readout`: the finished rep, team and organisation values of the scopes this
worker owns) and emits one family per KPI and scope, named ``salespulse_<scope>_<kpi>`` (SPEC
section 3). The text is cached per slot (scope, id, and the minute or the longer window
kinds together) and family: a scrape formats again only the slots with a current or previous
window changed since the last scrape (the stage numbers every change of a window, its ``seq``),
or of a kind whose window moved on, and joins the cached lines family by family. Each line is
its series' template (names and labels, formatted once) filled with the scope's labels and
the value. The longer kinds' slots keep a plan (their lines' templates, sorted by family, and
where each line's labels and value come from) while their windows keep their keys: a change of
values then fills the whole slot with one ``%`` and cuts it into its families, with no Python
work per line. Across the workers of a group each series is exported by exactly one of them;
after a rebalance a worker stops exporting what it gave away. The service's own counters are
:mod:`streams.exposition`.
"""

from __future__ import annotations

import itertools
import threading
import time
from array import array
from collections import deque
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from functools import partial
from operator import add, getitem, itemgetter, ne, not_, setitem
from typing import Any, NamedTuple

from metrics.catalog import Catalog
from metrics.windows import KIND_INDEX, WINDOW_KINDS, Calendar

SCOPE_LABELS = {"rep": ("rep", "team"), "team": ("team",), "org": ()}
#: The cache's slots hold a scope's lines of a group of window kinds: the minute, whose window
#: moves on every minute, alone, the longer kinds together (an event changes every kind's
#: window at once; fewer, larger pieces cost less to format, store and join).
KIND_GROUPS: tuple[tuple[int, ...], ...] = ((KIND_INDEX["minute"],), tuple(
    i for i, kind in enumerate(WINDOW_KINDS) if kind != "minute"))
MINUTE_GROUP = 0
GROUP_OF: tuple[int, ...] = tuple(next(g for g, kinds in enumerate(KIND_GROUPS) if i in kinds)
                                  for i in range(len(WINDOW_KINDS)))


class Captured(NamedTuple):
    """A scrape's read of the stage (:meth:`KpiRenderer.capture`)."""

    number: int  # captures are numbered: a render never applies an older one over a newer
    starts: tuple[tuple[float, float], ...]  # per window kind: (current start, previous start)
    #: the keys (scope, id, kind, start) of every current or previous window; None: the
    #: capture read only what changed since the last render (nothing went, no window moved on)
    present: list[tuple] | None
    changed: dict[tuple, tuple[int, tuple, dict]]  # key -> (seq, label values, values)
    upto: int = 0  # the stage's change number when captured
    drops: int = 0  # the stage's drop count when captured
    gone: tuple = ()  # with ``present`` None: the windows dropped since the last render


def requested_names(query: Mapping[str, str]) -> frozenset[str] | None:
    """The metric names of a scrape's ``name[]`` query parameters (repeatable, as Prometheus'
    client libraries take them), or None for the whole exposition."""
    getall = getattr(query, "getall", None)
    names = getall("name[]", ()) if getall is not None else query.get("name[]", ())
    if isinstance(names, str):
        names = (names,)
    return frozenset(names) or None


#: What a scrape's response writes at a time (streams.app): the cached pieces, joined up to this.
WRITE_BYTES = 256 * 1024


def write_pieces(parts: Sequence[bytes], size: int = WRITE_BYTES) -> Iterator[bytes]:
    """The pieces of a body, joined into writes of about ``size`` bytes each: the body itself
    is never whole in memory. Each write joins a slice of the pieces, as many as would have made
    ``size`` in the write before it, at most twice as many (16 in the first): no Python work per
    piece (a body of 1,000 reps has ~75,000; a loop over them cost the event loop ~10-15 ms a
    scrape). A write after much smaller pieces may be larger than ``size`` (its pieces' count
    is at most twice the one before)."""
    first, total, count = 0, len(parts), 16
    while first < total:
        write = b"".join(parts[first:first + count])
        first += count
        yield write
        count = max(1, min(2 * count, count * size // len(write))) if write else 2 * count


def _escape(value: str) -> str:
    """A label value in the text exposition format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class KpiRenderer:
    """Windowed KPI families, per scope, rendered straight to the text exposition format.

    A scrape of 1,000 reps has ~150,000 series. Building a client ``Metric`` and ``Sample``
    object per series took seconds on the event loop that also processes events; here each
    series is a bytes template filled with the scope's escaped labels (cached per id) and its
    value, once per change of its window, and kept until its window changes again or is no
    longer current or previous.
    """

    def __init__(
        self,
        catalog: Catalog,
        calendar: Calendar,
        scopes: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.calendar = calendar
        self.scopes = scopes  # the readout: windows() of the scopes this worker owns
        self._stored = frozenset(k.name for k in catalog.stored)
        self.clock = clock
        self._labels: dict[tuple, tuple[str, bytes]] = {}  # (names, values) -> fragment
        self.families: dict[tuple[str, str], str] = {}  # (scope, kpi) -> metric name
        self.windows_of: dict[str, frozenset[str]] = {}
        for kpi in catalog.kpis:
            self.windows_of[kpi.name] = frozenset(catalog.windows_of(kpi.name))
            if kpi.exported:
                for scope in kpi.scopes:
                    self.families[(scope, kpi.name)] = f"salespulse_{scope}_{kpi.name}"
        self.metric_names: frozenset[str] = frozenset(self.families.values())  # the KPI families
        self._dims = {k.name: catalog.dimensions_of(k.name) for k in catalog.kpis}
        #: the families in order, by number: a line's family is an int (cheap to hash)
        self._order: list[tuple[str, str]] = list(self.families)
        #: (scope, kind index) -> kpi -> (family number, metric name): what a slot exports
        self._exported: dict[tuple[str, int], dict[str, tuple[int, str]]] = {
            (scope, i): {kpi: (f, self.families[(sc, kpi)]) for f, (sc, kpi) in enumerate(self._order)
                         if sc == scope and kind in self.windows_of[kpi]}
            for scope in SCOPE_LABELS for i, kind in enumerate(WINDOW_KINDS)
        }
        #: (scope, kind index, previous at 0) -> value key -> its line's template (_series_of)
        self._series: dict[tuple[str, int, bool], _Series] = {
            (scope, i, zero): _Series(partial(self._series_of, scope, i, zero))
            for scope in SCOPE_LABELS for i in range(len(WINDOW_KINDS)) for zero in (False, True)}
        self._heads: list[bytes] = []
        for scope, kpi in self._order:
            name = self.families[(scope, kpi)]
            help_text = catalog.by_name[kpi].help.replace("\\", "\\\\").replace("\n", "\\n")
            self._heads.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n".encode())
        # The cache, changed by render only (under the lock); capture reads ``_windows``.
        self._lock = threading.Lock()
        self._captures = 0
        self._applied = 0  # the number of the newest capture rendered
        self._applied_upto = -1  # the stage's change number of that capture (-1: none yet)
        self._applied_drops = -1
        #: window key -> (the seq it was rendered at, label values, values): as captured
        self._windows: dict[tuple, tuple[int, tuple, dict]] = {}
        self._starts: tuple[tuple[float, float], ...] = ()
        #: family number -> its slots' lines, encoded, one piece per slot (scope, id, kind
        #: group) at the slot's place in the family (b"" at a free place): a scrape writes
        #: these as they are (docs/benchmark.md). A list, stored into by place: no hashing,
        #: and 8 bytes a piece where a dict took ~36.
        self._chunks: list[list[bytes]] = [[] for _ in self._order]
        self._free: list[list[int]] = [[] for _ in self._order]  # family -> its free places
        #: slot -> the families it has lines in, and its place in each (in that order)
        self._slots: dict[tuple, tuple[tuple[int, ...], array]] = {}
        #: window key -> the lines at 0 it may give as a previous window (_plan, _direct),
        #: kept until its keys change: the previous window rarely does
        self._zeros: dict[tuple, tuple[tuple, ...]] = {}
        self._text = _Texts()
        #: slot -> how its lines are made from its windows (:meth:`_plan`), while its windows
        #: keep their keys and labels
        self._plans: dict[tuple, _Plan] = {}
        self._sep_in_labels = False  # whether a series' template has the separator
        self.formatted = 0  # slots formatted so far: unchanged windows are not formatted again

    def _fragment(self, names: tuple[str, ...], values: tuple) -> str:
        """'a="x",b="y",' for label names and values, cached."""
        return self._fragments(names, values)[0]

    def _head(self, names: tuple[str, ...], values: tuple) -> bytes:
        """The label fragment of a slot's scope (:meth:`_fragment`), encoded, cached."""
        return self._fragments(names, values)[1]

    def _fragments(self, names: tuple[str, ...], values: tuple) -> tuple[str, bytes]:
        key = (names, values)
        hit = self._labels.get(key)
        if hit is None:
            if len(self._labels) > 200_000:
                self._labels.clear()
            text = "".join(f'{n}="{_escape(str(v))}",' for n, v in zip(names, values, strict=True))
            hit = self._labels[key] = (text, text.encode())
        return hit

    def capture(self) -> Captured:
        """What a render needs from the stage: which windows are current or previous now, and
        the values of those that changed since they were last rendered. Runs on the event loop
        (one pass over the stage's windows; values and team labels are read only for windows
        whose change number moved). The value dicts are the stage's finished ones, replaced and
        never changed in place, so a render may read them in a thread."""
        now = self.clock()
        starts = []
        wanted: set[tuple[int, float]] = set()
        for kind_index, kind in enumerate(WINDOW_KINDS):
            start, _ = self.calendar.bounds(kind, now)
            prev_start, _ = self.calendar.bounds(kind, start - 1.0)
            starts.append((start, prev_start))
            wanted.update(((kind_index, start), (kind_index, prev_start)))
        self._captures += 1
        held = self._windows  # read here, written by render (a dict lookup is atomic)
        catalog = self.catalog
        scopes = self.scopes
        upto, drops = scopes.seq(), scopes.drops()
        changed = {}
        gone = scopes.dropped_since(self._applied_drops) if self._applied_upto >= 0 else None
        if gone is not None and tuple(starts) == self._starts:
            # no window moved on since the last render: what changed and what went since
            # (each window once: the stage keeps one change per window, its newest)
            for key, window in scopes.changed_since(self._applied_upto):
                if key[3] in starts[key[2]] and ((was := held.get(key)) is None
                                                 or was[0] != window.seq):
                    changed[key] = (window.seq, window.labels(key[0], key[1]),
                                    window.values(catalog))
            return Captured(self._captures, tuple(starts), None, changed, upto, drops,
                            tuple(k for k in gone if (k[2], k[3]) in wanted))
        present = []
        for key, window in scopes.windows():
            if (key[2], key[3]) not in wanted:
                continue
            present.append(key)
            if (was := held.get(key)) is None or was[0] != window.seq:
                changed[key] = (window.seq, window.labels(key[0], key[1]), window.values(catalog))
        return Captured(self._captures, tuple(starts), present, changed, upto, drops)

    def render(self, captured: Captured | None = None,
               names: Collection[str] | None = None) -> bytes:
        """The KPI families as exposition text (UTF-8): :meth:`parts`, joined."""
        return b"".join(self.parts(captured, names))

    def parts(self, captured: Captured | None = None,
              names: Collection[str] | None = None) -> list[bytes]:
        """The KPI families as pieces of exposition text (UTF-8), in order: the cached pieces
        themselves, not copies (the /metrics handler writes them as they are, a few at a time:
        :func:`write_pieces`).
        Given a :meth:`capture`, it touches no live state and may run off the event loop (in a
        thread); renders are serialised, and a capture older than one already rendered is not
        applied (the newer text is served). The pieces are immutable: a later render replaces
        them in the cache and never changes a list already returned.

        ``names``: only the families of these metric names (``GET /metrics?name[]=...``, as
        prometheus_client's exposition restricts its registry); the capture is applied to the
        cache all the same, so a later full scrape formats nothing twice."""
        captured = captured if captured is not None else self.capture()
        with self._lock:
            if captured.number > self._applied:
                self._apply(captured)
                self._applied = captured.number
                self._applied_upto, self._applied_drops = captured.upto, captured.drops
            parts: list[bytes] = []
            heads, families = self._heads, self.families
            for family, chunks in enumerate(self._chunks):
                if names is not None and families[self._order[family]] not in names:
                    continue
                parts.append(heads[family])
                parts += chunks
            return parts

    def _apply(self, captured: Captured) -> None:
        """Bring the cached lines up to a capture: forget the windows that are gone or no
        longer current or previous, take the changed ones, and format again only the slots
        (scope, id, kind group) of those windows, and every slot of a kind whose window moved
        on. A slot's plan (:meth:`_plan`) stays while its windows keep their keys, in order,
        and their labels: most changes are new values of the same series."""
        windows, plans = self._windows, self._plans
        dirty: set[tuple[str, str, int]] = set()
        present = set(captured.present) if captured.present is not None else None
        gone = [k for k in windows if k not in present] if present is not None else \
            [k for k in captured.gone if k in windows and k not in captured.changed]
        zeros = self._zeros
        for key in gone:
            del windows[key]
            zeros.pop(key, None)
            slot = (key[0], key[1], GROUP_OF[key[2]])
            dirty.add(slot)
            plans.pop(slot, None)
        starts = captured.starts
        for key, entry in captured.changed.items():
            slot = (key[0], key[1], GROUP_OF[key[2]])
            old = windows.get(key)
            if old is None or old[1] != entry[1]:  # new, or relabelled
                plans.pop(slot, None)
                zeros.pop(key, None)
            elif slot[2] == MINUTE_GROUP and key[3] == starts[key[2]][0]:
                # a current minute (formatted without a plan)
                zeros.pop(key, None)  # (should it have been previous, the clock set back)
            elif not _same_keys(old[2], entry[2]):
                # other keys: a previous window's lines at 0 are other ones; a current one's
                # kept plan was made from the keys of ``old`` (and it may have been previous)
                plans.pop(slot, None)
                zeros.pop(key, None)
            windows[key] = entry
            dirty.add(slot)
        old_starts = self._starts
        if captured.starts != old_starts:
            # a kind's window moved on: its current window is now the previous one
            moved = {i for i, pair in enumerate(captured.starts)
                     if i >= len(old_starts) or old_starts[i] != pair}
            for slot in {(k[0], k[1], GROUP_OF[k[2]]) for k in windows if k[2] in moved}:
                dirty.add(slot)
                plans.pop(slot, None)
            self._starts = captured.starts
        for slot in dirty:
            self._format(slot)

    def _format(self, slot: tuple[str, str, int]) -> None:
        """The lines of one slot (scope, id, group of window kinds), per family: the longer
        kinds' from the slot's plan (:meth:`_plan`), filled with the value texts of its
        current windows in a few C-level calls for the whole slot (no Python work per line
        or family); the minute's and those of previous windows only as they are
        (:meth:`_direct`)."""
        self.formatted += 1
        if slot[2] == MINUTE_GROUP:
            self._direct(slot)
            return
        windows, plans = self._windows, self._plans
        plan = plans.get(slot)
        values: list = []
        if plan is not None:  # its windows' keys are its plan's (:meth:`_apply`)
            for key in plan.current:
                values += windows[key][2].values()
        fixed: tuple[tuple[int, ...], list[bytes]] | None = None
        if plan is None:
            scope, scope_id, group = slot
            if not any((scope, scope_id, kind, self._starts[kind][0]) in windows
                       for kind in KIND_GROUPS[group]):
                self._direct(slot)  # previous windows only
                return
            plan, fixed = self._plan(slot)
            if plan.every:
                plans[slot] = plan
            values.clear()
            for key in plan.current:
                values += windows[key][2].values()
        heads, current, needed, templates, gather, families, bounds, every = plan
        if families:
            if needed is not None:  # only the values that have lines
                values = itemgetter(*needed)(values) if needed else ()
            args = list(heads)
            texts = self._text.__getitem__
            if _FLOATS.issuperset(map(type, values)):
                args += map(texts, values)
            else:
                args += [texts(v) if type(v) is float else repr(v).encode() for v in values]
            self._store(slot, every, _fill(templates, gather, bounds, args))
        elif not every:
            self._store(slot, every, ())
        if fixed is not None:  # (after the families with current values: ``every``)
            self._store(slot, every, fixed[1], len(families))

    def _direct(self, slot: tuple[str, str, int]) -> None:
        """A slot's lines formatted as they are, line by line, without a plan: a minute
        slot's (its window moves on every minute, and one kind's lines cost no more this way
        than from a plan), or a slot with previous windows only (a window just moved on: its
        next change is a new window, and another plan). Per kind of the slot's group: its
        previous window's stored KPIs at 0 where the current window has none yet, then its
        current window's values, each line its series' template filled with the labels and
        the value's text."""
        scope, scope_id, group = slot
        names = SCOPE_LABELS[scope]
        windows, zeros_of = self._windows, self._zeros
        text = self._text.__getitem__
        lines: dict[int, bytes] = {}
        for kind in KIND_GROUPS[group]:
            start, prev_start = self._starts[kind]
            current = windows.get((scope, scope_id, kind, start))
            prev_key = (scope, scope_id, kind, prev_start)
            previous = windows.get(prev_key)
            _, cur_ids, cur_values = current if current is not None else (None, None, {})
            if previous is not None:
                _, ids, values = previous
                head = self._head(names, ids)
                skip = cur_values if ids == cur_ids else ()
                zeros = zeros_of.get(prev_key)
                if zeros is None:
                    zeros = zeros_of[prev_key] = tuple(filter(
                        None, map(self._series[(scope, kind, True)].__getitem__, values)))
                for family, template, key, _ in zeros:
                    if key in skip:
                        continue
                    prior = lines.get(family)
                    lines[family] = template % head if prior is None else prior + template % head
            if current is not None:
                head = self._head(names, cur_ids)
                for series, value in zip(map(self._series[(scope, kind, False)].__getitem__,
                                             cur_values), cur_values.values(), strict=True):
                    if series:
                        line = series[1] % (head, text(value) if type(value) is float else
                                            repr(value).encode())
                        prior = lines.get(series[0])
                        lines[series[0]] = line if prior is None else prior + line
        self._store(slot, tuple(lines), lines.values())

    def _plan(self, slot: tuple[str, str, int]) -> tuple[_Plan, tuple | None]:
        """How a slot's lines are made from its windows: per kind of its group, its current
        window's values, and the stored KPIs of its previous window at 0 where the current
        window has none yet (a gauge drops to the new window's value at the boundary even
        when no event arrives); then sorted by family (stably: in that order within one).
        Each line is its series' template (:meth:`_series_of`), the first of a family's with
        the separator in front, filled from the slot's args: the labels of each kind's
        previous and current window (``heads``), then the texts of the current windows'
        values that have lines (``needed``: their positions in the windows' values in turn;
        None: all of them). Built with C-level calls per window kind, not per line. The
        families with lines at 0 only are not in the plan: their pieces are returned, filled
        once (they change only with the plan)."""
        scope, scope_id, group = slot
        names = SCOPE_LABELS[scope]
        windows, zeros_of = self._windows, self._zeros
        heads: list[bytes] = []
        current: list[tuple] = []
        rows: list[tuple] = []  # (family, template, key, template after SEP, arg positions)
        live: set[int] = set()  # the families with a current value
        needed: list[int] = []
        first = 2 * len(KIND_GROUPS[group])  # the first value text's place in the args
        position = 0  # in the current windows' values, in turn
        for kind in KIND_GROUPS[group]:
            start, prev_start = self._starts[kind]
            cur_key = (scope, scope_id, kind, start)
            cur = windows.get(cur_key)
            prev_key = (scope, scope_id, kind, prev_start)
            previous = windows.get(prev_key)
            _, cur_ids, cur_values = cur if cur is not None else (None, None, {})
            if previous is not None:
                _, ids, values = previous
                here = ((len(heads),),)
                heads.append(self._head(names, ids))
                zeros = zeros_of.get(prev_key)
                if zeros is None:  # the window's stored and exported KPIs (map and filter run in C)
                    zeros = zeros_of[prev_key] = tuple(filter(  # (a tuple: the GC untracks it)
                        None, map(self._series[(scope, kind, True)].__getitem__, values)))
                if ids == cur_ids and cur_values:  # not those the current window has
                    zeros = itertools.compress(zeros, map(
                        not_, map(cur_values.__contains__, map(_KEY, zeros))))
                rows += map(add, zeros, itertools.repeat(here))
            else:
                heads.append(b"")
            if cur is not None:
                here = len(heads)
                heads.append(self._head(names, cur_ids))
                current.append(cur_key)
                series = list(map(self._series[(scope, kind, False)].__getitem__, cur_values))
                lines = list(filter(None, series))
                live.update(map(_FAMILY, lines))
                rows += map(add, lines, zip(zip(
                    itertools.repeat(here), itertools.count(first + len(needed)))))
                needed += itertools.compress(itertools.count(position), series)
                position += len(series)
            else:
                heads.append(b"")
        rows.sort(key=_FAMILY)
        joined = not self._sep_in_labels and SEP not in b"".join(heads)
        mask = list(map(live.__contains__, map(_FAMILY, rows)))
        fixed = None
        if not all(mask):  # families at 0 only: filled now, once
            zero_rows = list(itertools.compress(rows, map(not_, mask)))
            rows = list(itertools.compress(rows, mask))
            templates, gather, families, bounds = _fill_of(zero_rows, joined)
            fixed = (families, _fill(templates, gather, bounds, heads))
        if len(needed) == position:
            kept: bytes | tuple[int, ...] | None = None  # every value has lines
        else:
            kept = _positions(needed * 2 if len(needed) == 1 else needed)  # (a tuple, always)
        templates, gather, families, bounds = _fill_of(rows, joined)
        every = families + fixed[0] if fixed is not None else families
        return _Plan(tuple(heads), tuple(current), kept, templates, gather, families, bounds,
                     every), fixed

    def _store(self, slot: tuple[str, str, int], families: tuple[int, ...],
               pieces: Iterable[bytes], start: int = 0) -> None:
        """Put a slot's new lines in the cache: ``pieces``, one per family of
        ``families[start:]``, in order (``families``: all it has lines in now; the places of
        those it has no more are freed)."""
        held = self._slots.get(slot)
        if held is not None and (held[0] is families or held[0] == families):
            places = held[1]  # (mostly the same plan, or families)
        elif families or held is not None:
            places = self._place(slot, held, families)
        else:
            return
        if start:
            families, places = families[start:], places[start:]
        # chunks[family][place] = piece, family by family (in C)
        _drain(map(setitem, map(self._chunks.__getitem__, families), places, pieces))

    def _place(self, slot: tuple[str, str, int], held: tuple | None,
               families: tuple[int, ...]) -> array:
        """A slot's places in its families now: kept in those it had lines in before, a free
        (or new) place in the others; the places of the families it left are freed."""
        chunks, free = self._chunks, self._free
        old = dict(zip(*held, strict=True)) if held is not None else {}
        places = array("I")
        for family in families:
            place = old.pop(family, None)
            if place is None:
                if free[family]:
                    place = free[family].pop()
                else:
                    place = len(chunks[family])
                    chunks[family].append(b"")
            places.append(place)
        for family, place in old.items():
            chunks[family][place] = b""
            free[family].append(place)
        if families:
            self._slots[slot] = (families, places)
        else:
            del self._slots[slot]
        return places

    def _series_of(self, scope: str, kind: int, zero: bool, key: tuple) -> tuple:
        """The line of the value ``key`` (kpi, *dims) of a slot of this scope and kind:
        (family number, template, key); ``template % (labels, value)`` is the line, the
        labels being the slot's (:meth:`_head`) and the value's ``repr``, encoded
        (:class:`_Texts`). With zero: the previous window's line at 0 (stored KPIs only),
        ``template % labels``. () if the value is not exported."""
        hit = self._exported[(scope, kind)].get(key[0])
        if hit is None or (zero and key[0] not in self._stored):
            return ()
        family, name = hit
        dims = key[1:]
        tail = "," + self._fragment(self._dims[key[0]], dims)[:-1] if dims else ""
        post = f'window="{WINDOW_KINDS[kind]}"{tail}}} '.replace("%", "%%")
        template = f"{name}{{%b{post}{'0.0' if zero else '%b'}\n".encode()
        if SEP in template:  # a dimension's label value: every plan cuts per family from now
            self._sep_in_labels = True
        return (family, template, key, SEP + template)


class _Plan(NamedTuple):
    """How a slot's lines are made (:meth:`KpiRenderer._plan`)."""

    heads: tuple[bytes, ...]  # per kind of the slot's group: previous and current labels
    current: tuple[tuple, ...]  # the keys of its current windows, whose value texts follow
    needed: bytes | tuple[int, ...] | None  # the positions of the values that have lines
    #: every line's template, family by family, SEP before each family's first but the
    #: slot's first; or (bounds) one template per family
    templates: tuple[bytes, ...]
    gather: bytes | tuple[int, ...]  # the positions of every line's args, in that order
    families: tuple[int, ...]  # the families it has current values in, in that order
    bounds: tuple[int, ...] | None  # per family, where its args start in ``gather``
    every: tuple[int, ...]  # every family it has lines in (and at 0 only)


def _fill_of(rows: list[tuple], joined: bool) -> tuple[
        tuple[bytes, ...], bytes | tuple[int, ...], tuple[int, ...], tuple[int, ...] | None]:
    """The templates, arg positions, families and (unless ``joined``) per family bounds of
    rows sorted by family (:meth:`KpiRenderer._plan`)."""
    order = list(map(_FAMILY, rows))
    starts = list(map(ne, itertools.chain((-1,), order), order))  # a family's first line
    families = tuple(itertools.compress(order, starts))
    gather = _positions(list(itertools.chain.from_iterable(map(_ARGS, rows))))
    if joined:  # the separator before each family's first line but the slot's first
        starts[:1] = [False] * len(starts[:1])
        return tuple(map(getitem, rows, map((1, 3).__getitem__, starts))), gather, families, None
    # a label value has the separator: a template and the args' bounds per family
    per_family: list[bytes] = []
    bounds = [0]
    for _, lines in itertools.groupby(rows, _FAMILY):
        lines = list(lines)
        per_family.append(b"".join(map(_TEMPLATE, lines)))
        bounds.append(bounds[-1] + sum(len(line[4]) for line in lines))
    return tuple(per_family), gather, families, tuple(bounds)


def _fill(templates: tuple[bytes, ...], gather: bytes | tuple[int, ...],
          bounds: tuple[int, ...] | None, args: Sequence[bytes]) -> Iterable[bytes]:
    """The pieces (one per family) of a fill (:func:`_fill_of`) from its slot's args."""
    filled = itemgetter(*gather)(args)  # every line's labels and value, family by family
    if bounds is None:  # the whole slot at once, cut where each family starts
        return (b"".join(templates) % filled).split(SEP)
    filled = filled if type(filled) is tuple else (filled,)
    return map(bytes.__mod__, templates, map(
        filled.__getitem__, itertools.starmap(slice, itertools.pairwise(bounds))))


_drain = deque(maxlen=0).extend  # runs an iterator to its end (in C)
_FAMILY = itemgetter(0)
_TEMPLATE = itemgetter(1)
_KEY = itemgetter(2)
_ARGS = itemgetter(4)  # a row's arg positions (:meth:`KpiRenderer._plan`)
_FLOATS = frozenset((float,))
#: Between families in a slot's text, filled at once and cut there (unless a label has it).
SEP = b"\x00"


def _positions(gather: list[int]) -> bytes | tuple[int, ...]:
    """Positions kept small: bytes (8 times smaller than a tuple) where each fits in one."""
    try:
        return bytes(gather)
    except ValueError:  # (a position past 255)
        return tuple(gather)


def _same_keys(old: Mapping, new: Mapping) -> bool:
    """Whether two value dicts have the same keys in the same order."""
    return old is new or (len(old) == len(new) and list(old) == list(new))


class _Series(dict):
    """Value key -> its line's family and template (:meth:`KpiRenderer._series_of`), made on
    first use: ``map(series.__getitem__, keys)`` runs in C for the keys already seen."""

    def __init__(self, make: Callable[[tuple], tuple]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, key: tuple) -> tuple:
        if len(self) > 100_000:  # label values come and go: bounded like the label cache
            self.clear()
        hit = self[key] = self.make(key)
        return hit


class _Texts(dict):
    """float -> its ``repr``, encoded, as a line ends with it: most values (counts, sums of
    whole units) recur, and a lookup costs half a ``repr``. Zero is never kept (0.0 and -0.0
    are equal keys, with different texts), nor NaN (never equal to itself)."""

    def __missing__(self, value: float) -> bytes:
        text = repr(value).encode()
        if value and value == value:
            if len(self) >= 10_000:  # ~1 MB at most: ratios and means rarely recur
                self.clear()
            self[value] = text
        return text

"""Stage 3: rep, team and organisation values, merged exactly from every aggregate partition.

The aggregate partitions publish their per-rep, per-team and organisation parts of every changed window
(:mod:`streams.publisher`) to the compacted ``<app_id>-rollup`` topic, in the partition of the
rep or team. The worker that owns keyed-events partition ``r`` also owns roll-up partition ``r``: it
reads it from the beginning when it is assigned (the compacted topic holds the latest partial
of every team, window and source partition: it is this stage's durable state, so there is
nothing else to snapshot or recover), keeps the newest partial per source, merges them
(sums of sums, merged sketches; ratios and quantiles from those), and is the one worker whose
sinks write the rep's, team's and organisation's values: /metrics, `sales.metrics`, Redis (they
read them through :mod:`streams.readout`). A worker drops what it gave away at a rebalance.

Windows close by the wall clock (``SALESPULSE_WINDOW_CLOCK=wall``, live input): a window closes
(its final values go to every sink) two grace periods after its end, and a source's tombstone after its grace is its
expiry, not a retraction. Replays of historical data close windows by event time instead
(``event``): the stage's clock is the newest source watermark its partials carry, the sources
publish an expired window's unpublished parts (not tombstones) and, after each round's partials,
their watermark to every roll-up partition (``metrics.partials.WATERMARK_KEY``). Read in order
with the partials, these marks are the stage's clock: in each roll-up partition, the lowest
watermark of all sources (``sources``: every keyed-events partition), so a window closes once
every source has read past its end plus two grace periods and all its partials for it are read.
A source partition that has no events, or stops receiving them, holds the windows open: a
replay needs events in every keyed partition, and one past the last window at its end. Once the stage has closed a
window it tombstones that window's partials itself and remembers it as closed: a
partial for a closed window (an event on time for its input partition but later than the
others by more than the grace period) is dropped and counted (``late_partials``). Closed windows
are remembered until their end is four grace periods behind the clock; a partial older than
that is dropped too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from metrics.catalog import Catalog
from metrics.leads import UNASSIGNED
from metrics.partials import DECODER, WATERMARK_KEY, Held, Partial, partial_key, shared_label
from metrics.rollup import finish_sums, merge_pairs
from streams.publisher import scope_partition

log = logging.getLogger(__name__)

_MARK = WATERMARK_KEY.encode()
#: At most this many of a worker's own records wait for their copy from the topic (local).
ECHO_MAX = 500_000
#: Dropped windows remembered for the readers that keep copies (the /metrics renderer).
DROP_LOG_MAX = 100_000
MARK_DECODER = msgspec.msgpack.Decoder(float)

WindowKey = tuple[str, str, int, float]  # (scope, id, kind, start)
_UNSET = object()
_NONE: dict = {}  # no samples, no sketches (read only)


class ScopeWindow:
    """One scope's window: the newest partial of every source partition (:class:`Held`: its
    sums packed), and its finished values once read."""

    __slots__ = ("partition", "end", "key", "sources", "_values", "_team", "seq", "closed",
                 "update", "update_seq")

    def __init__(self, partition: int, end: float, key: WindowKey) -> None:
        self.partition = partition  # the roll-up partition it came from
        self.end = end
        #: its key in the stage, (scope, id, kind, start): the one tuple (and strings) every
        #: index of the stage holds for it (the key a partial is looked up with is its own)
        self.key = key
        self.sources: dict[int, Held] = {}  # source partition -> its newest partial
        self._values: dict[tuple, float] | None = None
        self._team: str | None | object = _UNSET  # team(), until the sources change
        self.seq = 0  # the stage's change number of its last change (streams.readout)
        self.closed = False  # past its end plus twice the grace: final, nothing changes it
        #: the streams.readout.WindowUpdate of change ``update_seq``, as the first reader of
        #: it built it: the next readers take it as it is (a change renumbers the window)
        self.update: Any = None
        self.update_seq = -1  # (no change numbered yet)

    def put(self, partial: Partial) -> bool:
        current = self.sources.get(partial.source)
        if current is not None \
                and (current.epoch, current.version) > (partial.epoch, partial.version):
            return False  # a stale copy from a worker that lost the partition
        self.hold(partial.source, partial.held())
        return True

    def hold(self, source: int, held: Held) -> None:
        """``held`` as the source's partial (newest: the caller has compared the versions)."""
        self.sources[source] = held
        self._values = None
        # one source (most rep windows): its label, known now; else read again when asked
        self._team = (held.team or None) if len(self.sources) == 1 else _UNSET

    def remove(self, source: int) -> bool:
        if self.sources.pop(source, None) is None:
            return False
        self._values = None
        self._team = _UNSET
        return True

    def values(self, catalog: Catalog) -> dict[tuple, float]:
        if self._values is None:
            sources = self.sources
            # most rep windows have one source (their own partition): finish reads it as is
            # the sums' dict is made here for this finish, and becomes the values
            if len(sources) == 1:  # most rep windows: their own partition's partial, no merge
                for held in sources.values():
                    self._values = finish_sums(
                        catalog, dict(zip(held.keys, held.sums, strict=True)),
                        held.samples or _NONE, held.sketches or _NONE)
            else:
                parts = merge_pairs(h.mergeable() for h in sources.values())
                self._values = finish_sums(catalog, parts.sums, parts.samples, parts.sketches)
        return self._values

    def labels(self, scope: str, scope_id: str) -> tuple:
        """The label values of the scope's series: (rep, team), (team,) or ()."""
        if scope == "rep":
            return (scope_id, self.team() or UNASSIGNED)
        return (scope_id,) if scope == "team" else ()

    def team(self) -> str | None:
        """A rep's team label: from the source holding its sums (its own partition), else any
        (kept until the sources change: the readout and every scrape read it)."""
        if self._team is _UNSET:
            self._team = self._label()
        return self._team  # type: ignore[return-value]

    def _label(self) -> str | None:
        sources = self.sources
        if len(sources) == 1:  # most rep windows (read at every scrape of a changed window)
            for held in sources.values():
                return held.team or None
        labels = [(bool(h.keys), h.team) for h in sources.values() if h.team]
        return max(labels, key=lambda x: x[0])[1] if labels else None


def _window_of(key: bytes) -> tuple[WindowKey, int]:
    """A partial's key (``metrics.partials.partial_key``) as its window's key and source."""
    head, kind, start, source = key.decode().rsplit("/", 3)
    scope, scope_id = head.split("/", 1)  # ids may contain "/"
    return (scope, scope_id, int(kind), float(start)), int(source)


def _digest(value: bytes | None) -> int:
    """What the echo of an own record compares with its copy from the topic: the value's hash
    (64 bits), and -1 for a tombstone."""
    return -1 if value is None else hash(value)


class RollupStage:
    def __init__(
        self,
        catalog: Catalog,
        *,
        topic: str,
        partitions: int,
        grace_seconds: float,
        consumer_factory: Callable[[], AIOKafkaConsumer],
        clock: Callable[[], float] = time.time,
        event_time: bool = False,
        sources: int = 0,
        send: Callable[..., Any] | None = None,
    ) -> None:
        """``send`` (event time only) tombstones a closed window's partials."""
        self.catalog = catalog
        self.event_time = event_time
        self.sources = sources  # event time: the keyed-events partitions, each a source
        self.send = send
        #: event time: roll-up partition -> source -> the watermark it announced there
        self._marks: dict[int, dict[int, float]] = {}
        #: event time: windows closed -> (roll-up partition, end)
        self._closed: dict[WindowKey, tuple[int, float]] = {}
        self._tombstones: list[tuple[WindowKey, int, list[int]]] = []  # event time: to send
        self.late_partials = 0
        self.topic = topic
        self.partitions = partitions
        self.grace = grace_seconds
        self.consumer_factory = consumer_factory
        self.clock = clock
        self.windows: dict[WindowKey, ScopeWindow] = {}
        #: the keys of the windows in the order of their last change (seq): a reader takes
        #: what changed since its last read from the end, without a pass over every window
        self.recent: dict[WindowKey, ScopeWindow] = {}
        #: the windows closed and not yet dropped (streams.readout drops them once read)
        self.finals: dict[WindowKey, None] = {}
        #: the keys of the windows dropped, in order: a reader that keeps copies (the /metrics
        #: renderer) forgets them; ``drop_base`` entries were trimmed from its front
        self.drop_log: list[WindowKey] = []
        self.drop_base = 0
        self._next_close = float("-inf")  # by the wall clock: no window closes before this
        self.partials_read = 0
        self.seq = 0  # numbers the changes of windows, for the readers of streams.readout
        #: times the partitions assigned last were read to the ends they had when assigned:
        #: from then on the stage holds every window of what it owns (streams.readout.takeovers)
        self.takeovers = 0
        self._replaying: dict[TopicPartition, int] = {}
        #: records applied by :meth:`local` whose copies from the topic are still to come: key
        #: -> their values' digests (:func:`_digest`) in order; their values are not kept (a
        #: worker behind its roll-up topic would hold every partial it sent since): what they
        #: brought is in the windows
        self._echo: dict[bytes, list[int]] = {}
        self._wanted: set[int] = set()
        self._assigned: set[int] = set()
        self._changed = asyncio.Event()

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def touch(self, wkey: WindowKey, window: ScopeWindow) -> None:
        """Number a change of ``window`` and move it to the end of :attr:`recent`."""
        window.seq = self.next_seq()
        recent = self.recent
        recent.pop(wkey, None)
        recent[wkey] = window

    def drop(self, keys: Iterable[WindowKey]) -> None:
        """Forget these windows (given away, or closed and read by every reader)."""
        windows, recent, finals, log = self.windows, self.recent, self.finals, self.drop_log
        for key in keys:
            if windows.pop(key, None) is not None:
                log.append(key)
            recent.pop(key, None)
            finals.pop(key, None)
        if len(log) > DROP_LOG_MAX:
            self.drop_base += len(log)
            log.clear()

    @property
    def drops(self) -> int:
        """How many windows were dropped so far."""
        return self.drop_base + len(self.drop_log)

    def dropped_since(self, drops: int) -> list[WindowKey] | None:
        """The keys of the windows dropped after the first ``drops``; None if no longer known."""
        if drops < self.drop_base:
            return None
        return self.drop_log[drops - self.drop_base:]

    def changed_since(self, seen: int) -> list[tuple[WindowKey, ScopeWindow]]:
        """The windows changed after change number ``seen``, each once (:attr:`recent` is a
        dict), newest first."""
        out = []
        append = out.append
        for item in reversed(self.recent.items()):  # (key, window): no lookup of the key
            if item[1].seq <= seen:
                break
            append(item)
        return out

    # -- ownership -----------------------------------------------------------------------
    def assign(self, partitions: Iterable[int]) -> None:
        """The keyed-events partitions this worker owns now: it owns the same roll-up ones."""
        self._wanted = set(partitions)
        self._changed.set()

    def settled(self) -> bool:
        """Whether the stage holds every window of the partitions it was given: none is being
        read from its beginning, and no new assignment waits."""
        return not self._replaying and self._assigned == self._wanted

    def owns(self, scope_id: str) -> bool:
        """Whether the rep, team or org with this id is in a roll-up partition of this worker."""
        return scope_partition(scope_id, self.partitions) in self._assigned

    def owned(self) -> dict[str, Any]:
        return {"partitions": sorted(self._assigned), "windows": len(self.windows),
                "partials_read": self.partials_read, "late_partials": self.late_partials}

    def local(self, records: Iterable[tuple[str, bytes, bytes | None, int | None]]) -> None:
        """A round of this worker's own partials and tombstones, as it sends them to the topic:
        those of the roll-up partitions this stage owns (and is not reading from their
        beginning) are applied now, without waiting for their trip through Kafka. Their copies
        from the topic are then skipped; should one of them come back changed (it cannot: the
        same source, epoch and version), it is applied as any record. A record of the topic
        that is not the next of these copies (an older one, read again from the partition's
        beginning, or another worker's tombstone: tombstones carry no version) is applied, and
        the newest own value of its key again on top of it. Not closing by event time, where
        the partials must be read in order with the watermarks."""
        if self.event_time:
            return
        assigned, echo = self._assigned, self._echo
        replaying = {tp.partition for tp in self._replaying}
        if len(echo) > ECHO_MAX:
            echo.clear()  # copies that never came back (a rebalance): only the skips are lost
        for topic, key, value, partition in records:
            if topic != self.topic or partition not in assigned or partition in replaying:
                continue
            self._apply_record(partition, key, value)
            pending = echo.get(key)
            if pending is None:
                echo[key] = [_digest(value)]
            else:
                pending.append(_digest(value))

    def _reassign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        self._echo.clear()
        gone = self._assigned - self._wanted
        if gone:
            self.drop([k for k, w in self.windows.items() if w.partition in gone])
            for key in [k for k, (p, _) in self._closed.items() if p in gone]:
                del self._closed[key]
            for p in gone:
                self._marks.pop(p, None)
        added = self._wanted - self._assigned
        self._assigned = set(self._wanted)
        log.info("roll-up partitions: %s (new: %s)", sorted(self._assigned), sorted(added))
        consumer.assign([TopicPartition(self.topic, p) for p in sorted(self._assigned)])
        return [TopicPartition(self.topic, p) for p in sorted(added)]

    async def run(self) -> None:
        """Follow the owned roll-up partitions, each read from its beginning when assigned."""
        consumer = self.consumer_factory()
        await consumer.start()
        try:
            while True:
                if self._changed.is_set():
                    self._changed.clear()
                    added = self._reassign(consumer)
                    if added:
                        await consumer.seek_to_beginning(*added)
                        self._replaying = {tp: end for tp, end in self._replaying.items()
                                           if tp.partition in self._assigned}
                        self._replaying.update(await consumer.end_offsets(added))
                if not self._assigned:
                    await self._changed.wait()
                    continue
                batch = await consumer.getmany(timeout_ms=100)
                if self._changed.is_set():
                    continue  # the assignment moved under this batch: re-read what is ours
                for tp, records in batch.items():
                    for rec in records:
                        self._apply(tp.partition, rec.key, rec.value)
                if self._replaying and await self._replayed(consumer):
                    self._replaying = {}
                    self.takeovers += 1
                await self._send_tombstones()
        finally:
            await consumer.stop()

    async def _replayed(self, consumer: AIOKafkaConsumer) -> bool:
        for tp, end in self._replaying.items():
            if await consumer.position(tp) < end:
                return False
        return True

    def _closing(self, partition: int) -> float:
        """Event time up to which every source's partials in ``partition`` are read."""
        marks = self._marks.get(partition)
        if not marks or len(marks) < self.sources:
            return float("-inf")  # a source has not said how far it is
        return min(marks.values())

    def close_due(self, now: float) -> None:
        """Close the windows past their end plus twice the grace period, by the wall clock
        (``now``) or, closing by event time, by their roll-up partition's sources' watermarks:
        final, nothing changes them any more (``streams.readout`` hands them out once more)."""
        event_time = self.event_time
        limit = 2 * self.grace
        if not event_time and now < self._next_close:
            return  # by the wall clock, nothing closes before the earliest open end
        closing = {p: self._closing(p) for p in self._marks} if event_time else {}
        next_close = float("inf")
        for wkey, window in self.windows.items():
            if window.closed:
                continue
            clock = closing.get(window.partition, float("-inf")) if event_time else now
            if window.end + limit > clock:
                next_close = min(next_close, window.end + limit)
            else:
                window.closed = True
                self.finals[wkey] = None
                self.touch(wkey, window)
                if event_time:
                    self._closed[wkey] = (window.partition, window.end)
                    self._tombstones.append((wkey, window.partition, list(window.sources)))
        self._next_close = float("-inf") if event_time else next_close
        if event_time:
            for key in [k for k, (p, end) in self._closed.items()
                        if end + 4 * self.grace <= closing.get(p, float("-inf"))]:
                del self._closed[key]

    async def _send_tombstones(self) -> None:
        """Event time: tombstone the partials of closed windows (the sources do not: they
        cannot know when every source has reached the window's end)."""
        if not self._tombstones or self.send is None:
            return
        pending, self._tombstones = self._tombstones, []
        for (scope, scope_id, kind, start), partition, sources in pending:
            for source in sources:
                await self.send(self.topic, key=partial_key(scope, scope_id, kind, start, source),
                                value=None, partition=partition)

    def _apply(self, partition: int, key: bytes, value: bytes | None) -> None:
        pending = self._echo.get(key)
        if pending is None:
            self._apply_record(partition, key, value)
            return
        if pending[0] == _digest(value):
            del pending[0]  # applied when this worker published it (local)
            if not pending:
                del self._echo[key]
            return
        # an older record, or another worker's: then this worker's newest value on top again,
        # as the window held it (or, the newest own record a tombstone, that again)
        wkey, source = _window_of(key)
        window = self.windows.get(wkey)
        mine = window.sources.get(source) if window is not None else None
        self._apply_record(partition, key, value)
        if mine is None:
            self._apply_record(partition, key, None)
            return
        window = self.windows.get(wkey)
        if window is None or window.closed:
            return
        current = window.sources.get(source)
        if current is mine or current is not None \
                and (current.epoch, current.version) > (mine.epoch, mine.version):
            return
        window.hold(source, mine)
        self.touch(window.key, window)

    def _apply_record(self, partition: int, key: bytes, value: bytes | None) -> None:
        if key.startswith(_MARK):
            if value is not None:
                marks = self._marks.setdefault(partition, {})
                marks[int(key[len(_MARK):])] = MARK_DECODER.decode(value)
            return
        self.partials_read += 1
        if value is None:
            wkey, source = _window_of(key)
            window = self.windows.get(wkey)
            # A window closed past its grace can no longer change: a tombstone for it is the
            # source dropping it at expiry, and its parts stay for this stage's final record.
            # (Closing by event time, sources send no expiry tombstones: each is a retraction.)
            if window is not None and not window.closed \
                    and (self.event_time or self.clock() < window.end + self.grace) \
                    and window.remove(source):
                self.touch(window.key, window)
            return
        partial = DECODER.decode(value)
        wkey = (partial.scope, partial.id, partial.kind, partial.start)
        if self.event_time:
            if wkey in self._closed or partial.end + 4 * self.grace <= self._closing(partition):
                if not self.late_partials:
                    log.warning(
                        "a partial of %s arrived after the window was closed by event time: its "
                        "source ran more than the grace period behind the others; dropped "
                        "(counted in the health report's late_partials)", wkey,
                    )
                self.late_partials += 1
                return
        elif partial.end + 2 * self.grace <= self.clock():
            return  # expired before we read it: its final record is already out
        window = self.windows.get(wkey)
        if window is None:
            wkey = (shared_label(partial.scope), shared_label(partial.id), partial.kind,
                    partial.start)
            window = self.windows[wkey] = ScopeWindow(partition, partial.end, wkey)
            self._next_close = min(self._next_close, partial.end + 2 * self.grace)
        if not window.closed and window.put(partial):
            self.touch(window.key, window)

    # -- outputs (read through streams.readout) ---------------------------------------
    def values(self, scope: str, kind: int, start: float) -> dict[tuple, dict[tuple, float]]:
        """The KPI values of one window per scope's labels: (rep, team), (team,) or (), for
        the exposition. The dicts are the stage's own, replaced, never changed: read only."""
        out: dict[tuple, dict[tuple, float]] = {}
        for (s, scope_id, k, st), window in list(self.windows.items()):
            if s != scope or k != kind or st != start:
                continue
            out[window.labels(scope, scope_id)] = window.values(self.catalog)
        return out

"""Stage 3: rep, team and organisation values, merged exactly from every aggregate partition.

The aggregate partitions publish their per-rep, per-team and organisation parts of every changed window
(:mod:`streams.publisher`) to the compacted ``<app_id>-rollup`` topic, in the partition of the
rep or team. The worker that owns keyed-events partition ``r`` also owns roll-up partition ``r``: it
reads it from the beginning when it is assigned (the compacted topic holds the latest partial
of every team, window and source partition: it is this stage's durable state, so there is
nothing else to snapshot or recover), keeps the newest partial per source, merges them
(sums of sums, merged sketches; ratios and quantiles from those), and is the one worker that
exports the rep's, team's and organisation's families on /metrics and publishes their
`sales.metrics` records (coalesced to one per window per interval, and a final one when the
window expires). A worker drops what it gave away at a rebalance.

Windows close by the wall clock (``SALESPULSE_WINDOW_CLOCK=wall``, live input): a window's final
record goes out two grace periods after its end, and a source's tombstone after its grace is its
expiry, not a retraction. Replays of historical data close windows by event time instead
(``event``): the stage's clock is the newest source watermark its partials carry, the sources
publish an expired window's unpublished parts (not tombstones) and, after each round's partials,
their watermark to every roll-up partition (``metrics.partials.WATERMARK_KEY``). Read in order
with the partials, these marks are the stage's clock: in each roll-up partition, the lowest
watermark of all sources (``sources``: every keyed-events partition), so a window closes once
every source has read past its end plus two grace periods and all its partials for it are read.
A source partition that has no events, or stops receiving them, holds the windows open: a
replay needs events in every keyed partition, and one past the last window at its end. Once the stage has published a
window's final record it tombstones that window's partials itself and remembers it as closed: a
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
from metrics.partials import DECODER, WATERMARK_KEY, Partial, partial_key
from metrics.rollup import Parts, finish, merge
from metrics.snapshots import SnapshotFormat
from streams.publisher import PUBLISH_COST_FACTOR

log = logging.getLogger(__name__)

_MARK = WATERMARK_KEY.encode()
MARK_DECODER = msgspec.msgpack.Decoder(float)

WindowKey = tuple[str, str, int, float]  # (scope, id, kind, start)


class ScopeWindow:
    """One team's (or the org's) window: the newest partial of every source partition."""

    __slots__ = ("partition", "end", "sources", "_values", "dirty")

    #: sources: source partition -> (version, parts, team label)

    def __init__(self, partition: int, end: float) -> None:
        self.partition = partition  # the roll-up partition it came from
        self.end = end
        self.sources: dict[int, tuple[int, Parts, str | None]] = {}
        self._values: dict[tuple, float] | None = None
        self.dirty = True  # not yet published to sales.metrics

    def put(self, partial: Partial) -> bool:
        current = self.sources.get(partial.source)
        if current is not None and current[0] > partial.version:
            return False  # a stale copy from a worker that lost the partition
        self.sources[partial.source] = (partial.version, partial.parts, partial.team)
        self._values = None
        self.dirty = True
        return True

    def remove(self, source: int) -> None:
        if self.sources.pop(source, None) is not None:
            self._values = None
            self.dirty = True

    def values(self, catalog: Catalog) -> dict[tuple, float]:
        if self._values is None:
            self._values = finish(catalog, merge(p for _, p, _ in self.sources.values()))
        return self._values

    def team(self) -> str | None:
        """A rep's team label: from the source holding its sums (its own partition), else any."""
        labels = [(bool(p.sums), team) for _, p, team in self.sources.values() if team]
        return max(labels, key=lambda x: x[0])[1] if labels else None


class RollupStage:
    def __init__(
        self,
        catalog: Catalog,
        fmt: SnapshotFormat,
        *,
        topic: str,
        metrics_topic: str,
        grace_seconds: float,
        consumer_factory: Callable[[], AIOKafkaConsumer],
        send: Callable[..., Any],
        clock: Callable[[], float] = time.time,
        event_time: bool = False,
        sources: int = 0,
    ) -> None:
        self.catalog = catalog
        self.event_time = event_time
        self.sources = sources  # event time: the keyed-events partitions, each a source
        #: event time: roll-up partition -> source -> the watermark it announced there
        self._marks: dict[int, dict[int, float]] = {}
        #: event time: windows whose final record is out -> (roll-up partition, end)
        self._closed: dict[WindowKey, tuple[int, float]] = {}
        self.late_partials = 0
        self.fmt = fmt
        self.topic = topic
        self.metrics_topic = metrics_topic
        self.grace = grace_seconds
        self.consumer_factory = consumer_factory
        self.send = send
        self.clock = clock
        self.windows: dict[WindowKey, ScopeWindow] = {}
        self.partials_read = 0
        self._wanted: set[int] = set()
        self._assigned: set[int] = set()
        self._changed = asyncio.Event()
        self._next_publish = float("-inf")

    # -- ownership -----------------------------------------------------------------------
    def assign(self, partitions: Iterable[int]) -> None:
        """The keyed-events partitions this worker owns now: it owns the same roll-up ones."""
        self._wanted = set(partitions)
        self._changed.set()

    def owned(self) -> dict[str, Any]:
        return {"partitions": sorted(self._assigned), "windows": len(self.windows),
                "partials_read": self.partials_read, "late_partials": self.late_partials}

    def _reassign(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        gone = self._assigned - self._wanted
        if gone:
            for key in [k for k, w in self.windows.items() if w.partition in gone]:
                del self.windows[key]
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
                if not self._assigned:
                    await self._changed.wait()
                    continue
                batch = await consumer.getmany(timeout_ms=100)
                if self._changed.is_set():
                    continue  # the assignment moved under this batch: re-read what is ours
                for tp, records in batch.items():
                    for rec in records:
                        self._apply(tp.partition, rec.key, rec.value)
        finally:
            await consumer.stop()

    def _closing(self, partition: int) -> float:
        """Event time up to which every source's partials in ``partition`` are read."""
        marks = self._marks.get(partition)
        if not marks or len(marks) < self.sources:
            return float("-inf")  # a source has not said how far it is
        return min(marks.values())

    def _apply(self, partition: int, key: bytes, value: bytes | None) -> None:
        if key.startswith(_MARK):
            if value is not None:
                marks = self._marks.setdefault(partition, {})
                marks[int(key[len(_MARK):])] = MARK_DECODER.decode(value)
            return
        self.partials_read += 1
        if value is None:
            head, kind, start, source = key.decode().rsplit("/", 3)
            scope, scope_id = head.split("/", 1)  # ids may contain "/"
            window = self.windows.get((scope, scope_id, int(kind), float(start)))
            # A window closed past its grace can no longer change: a tombstone for it is the
            # source dropping it at expiry, and its parts stay for this stage's final record.
            # (Closing by event time, sources send no expiry tombstones: each is a retraction.)
            if window is not None and (self.event_time or self.clock() < window.end + self.grace):
                window.remove(int(source))
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
            window = self.windows[wkey] = ScopeWindow(partition, partial.end)
        window.put(partial)

    # -- outputs -------------------------------------------------------------------------
    async def publish(self) -> None:
        """`sales.metrics` records of windows that changed, and final ones of expired windows.

        Paced by its cost like the aggregate's publication (:data:`PUBLISH_COST_FACTOR`): in a
        backlog every rep's windows change all the time, and a record per rep and window each
        second would take the worker's loop from the events."""
        now = self.clock()
        if now < self._next_publish:
            return
        began = time.perf_counter()
        fmt, catalog = self.fmt, self.catalog
        closing = {p: self._closing(p) for p in self._marks} if self.event_time else {}
        for wkey, window in list(self.windows.items()):
            scope, scope_id, kind, start = wkey
            final = window.end + 2 * self.grace <= (
                closing.get(window.partition, float("-inf")) if self.event_time else now)
            if not (final or window.dirty):
                continue
            window.dirty = False
            if final:
                del self.windows[wkey]
            # a rep whose every source dropped it (tombstones) has no team label left
            team = (window.team() or UNASSIGNED) if scope == "rep" else None
            value = fmt.value(scope, scope_id, team, kind, start, window.end,
                              window.values(catalog), final=final, now=now)
            await self.send(self.metrics_topic, key=fmt.key(scope, scope_id, kind, start), value=value)
            if final and self.event_time:
                await self._close(wkey, window)
        if self.event_time:
            for key in [k for k, (p, end) in self._closed.items()
                        if end + 4 * self.grace <= closing.get(p, float("-inf"))]:
                del self._closed[key]
        self._next_publish = now + PUBLISH_COST_FACTOR * (time.perf_counter() - began)

    async def _close(self, wkey: WindowKey, window: ScopeWindow) -> None:
        """Event time: remember the window as closed and tombstone its partials (the sources
        do not: they cannot know when every source has reached the window's end)."""
        self._closed[wkey] = (window.partition, window.end)
        scope, scope_id, kind, start = wkey
        for source in window.sources:
            await self.send(self.topic, key=partial_key(scope, scope_id, kind, start, source),
                            value=None, partition=window.partition)

    def values(self, scope: str, kind: int, start: float) -> dict[tuple, dict[tuple, float]]:
        """The KPI values of one window per scope's labels: (rep, team), (team,) or (), for
        the exposition. The dicts are the stage's own, replaced, never changed: read only."""
        out: dict[tuple, dict[tuple, float]] = {}
        for (s, scope_id, k, st), window in list(self.windows.items()):
            if s != scope or k != kind or st != start:
                continue
            if scope == "rep":
                ids: tuple = (scope_id, window.team() or UNASSIGNED)
            elif scope == "team":
                ids = (scope_id,)
            else:
                ids = ()
            out[ids] = window.values(self.catalog)
        return out

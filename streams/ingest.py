"""Stage 1: validate input records, dead-letter the bad ones, forward the good ones by rep.

Input topics may be keyed any way (the spec says the record key is not relied on), so the
aggregate stage cannot be partitioned by them. Each good event is routed by its rep (or team,
lead, ... when it has no rep) to a partition of the internal keyed-events topic: all of a rep's
events, its roster entry and every duplicate of an event then meet in one aggregate partition.
Events of one source partition go to an aggregate partition in one bundle per poll (split
when its encoding would exceed :data:`MAX_BUNDLE_BYTES`, in offset order), so forwarding costs
about one Kafka record per (source partition, poll, aggregate partition).

Nothing here awaits delivery per batch: Faust's commit flushes the producer before it commits
the input offsets, so an input offset is never committed before what it produced is durable.
A failed send stops the worker before any commit passes it (``streams.delivery``): the input
it came from is re-read by the next start.

Forwarding order is what makes that re-read exact. The aggregate stage recognises re-forwarded
events by a per-source-partition high-water mark of source offsets, so a refused bundle followed
by an accepted later one (same source partition, same destination) would leave a gap that the
replay skips for good. So a batch's bundles are sent only once the previous batch of the same
source partition is delivered, and the bundles of one destination within a batch (when a poll
is split by size) one after the other: after a failed forward nothing later of that source
partition reaches any destination. Validating the next batch overlaps the previous one's
delivery, and batches of other source partitions are not held up.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from zlib import crc32

from metrics.events import (
    BUNDLE_ENCODER,
    DATA_TYPES,
    LANE_KPI,
    LANE_LEAD,
    Bundle,
    Event,
    RejectedEvent,
    UserEvent,
    Validator,
)
from metrics.leads import LEAD_LANE_TYPES

log = logging.getLogger(__name__)

MAX_BUNDLE_EVENTS = 4096
#: Upper bound of one bundle's encoding. Far below the keyed-events topic's
#: ``max.message.bytes`` (``streams.app.MAX_RECORD_BYTES``, 8 MB) and below the producer's batch
#: size (1 MB), so a producer batch never holds more than ~1 MB of bundles. 4096 events with
#: UUID ids encode to ~1.5 MB: over the broker's default limit of 1 MB.
MAX_BUNDLE_BYTES = 512 * 1024
_ROUTE_FIELDS = ("rep_id", "team_id", "lead_id", "opportunity_id", "customer_id")

Send = Callable[..., Awaitable[Any]]


def _plan(cls: type) -> tuple[tuple[str, ...], bool]:
    """How an event of data type ``cls`` is routed: the fields of :data:`_ROUTE_FIELDS` it has
    (the entity whose partition holds the event's state is the first one set: its rep when it
    has one; none set, the event's identity), and whether it also travels the lead lane (a
    lead lane type, when its ``lead_id`` is set)."""
    fields = tuple(f for f in _ROUTE_FIELDS if f in cls.__struct_fields__)
    tag = cls.__struct_config__.tag
    return fields, tag in LEAD_LANE_TYPES and "lead_id" in cls.__struct_fields__


#: data type -> its routing (:func:`_plan`), so that routing an event reads only the fields
#: it has. User events travel as ``UserEvent`` (no route field: routed by identity, as before).
_PLANS: dict[type, tuple[tuple[str, ...], bool]] = {
    cls: _plan(cls) for cls in (*DATA_TYPES.values(), UserEvent)
}
#: route keys whose destination partition is remembered (:attr:`IngestStage._dest_of`) before
#: the memory starts again: reps and teams repeat, the keys of leads and the like may not
MAX_ROUTES = 100_000


def dead_letter_headers(
    headers: Sequence[tuple[str, bytes]] | None, error: RejectedEvent, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    """Original headers plus why and where from, named after Kafka Connect's DLQ headers."""
    return [
        *(headers or ()),
        ("salespulse.errors.reason", error.reason.encode()),
        ("salespulse.errors.message", error.message.encode()),
        ("salespulse.errors.topic", topic.encode()),
        ("salespulse.errors.partition", str(partition).encode()),
        ("salespulse.errors.offset", str(offset).encode()),
    ]


def _unexpected(exc: Exception) -> RejectedEvent:
    """A record that broke the validator in a way it does not name: dead-letter it, log it,
    keep going. Bad input must never stop the service."""
    log.error("unexpected error validating a record; sent to the dead-letter topic", exc_info=exc)
    return RejectedEvent("unprocessable", f"{type(exc).__name__}: {exc}")


class IngestStage:
    """Validates one batch (the records of one source partition and poll) at a time."""

    def __init__(
        self,
        validator: Validator,
        send: Send,
        *,
        keyed_topic: str,
        partitions: int,
        dlq_topic: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.validator = validator
        self.send = send
        self.keyed_topic = keyed_topic
        self.partitions = partitions
        self.dlq_topic = dlq_topic
        self.clock = clock
        self.rejected: Counter[str] = Counter()
        self.position: dict[tuple[str, int], int] = {}  # next offset to read, per source tp
        self._event_bytes = 0.0  # encoded bytes per event in the last bundle
        self._unsettled: dict[tuple[str, int], list[Any]] = {}  # last batch's sends, per source tp
        self._dest_of: dict[str, int] = {}  # route key -> its partition (see MAX_ROUTES)

    async def process(self, topic: str, partition: int, records: Sequence[Any]) -> None:
        """Validate and forward ``records`` (aiokafka ConsumerRecords of one partition)."""
        events, errors = self.validator.decode_many(records, self.clock())
        for index, exc in errors:
            error = exc if isinstance(exc, RejectedEvent) else _unexpected(exc)
            await self.dead_letter(records[index], error, topic, partition)
        # per lane, the events of each destination partition (keyed by the partition alone:
        # no tuple per event)
        kpi_lane: defaultdict[int, list[Event]] = defaultdict(list)
        lead_lane_of: defaultdict[int, list[Event]] = defaultdict(list)
        dest_of = self._dest_of
        if len(dest_of) > MAX_ROUTES:
            dest_of.clear()
        parts = self.partitions
        plans = _PLANS
        for event in events:
            data = event.data
            fields, lead_lane = plans[type(data)]
            for field in fields:
                key = getattr(data, field)
                if key:
                    dest = dest_of.get(key)
                    if dest is None:
                        dest = dest_of[key] = crc32(key.encode()) % parts
                    break
            else:  # routed by its identity: not worth remembering
                dest = crc32(f"{event.source}\x00{event.id}".encode()) % parts
            kpi_lane[dest].append(event)
            if lead_lane and data.lead_id:  # type: ignore[attr-defined]
                # Speed to lead needs the lead's creation and its touches together: a second
                # copy travels in the lead lane, routed by the lead.
                lead_id = data.lead_id  # type: ignore[attr-defined]
                dest = dest_of.get(lead_id)
                if dest is None:
                    dest = dest_of[lead_id] = crc32(lead_id.encode()) % parts
                lead_lane_of[dest].append(event)
        await self.delivered(topic, partition)
        sent: list[Any] = []
        for lane, by_dest in ((LANE_KPI, kpi_lane), (LANE_LEAD, lead_lane_of)):
            for dest, events in by_dest.items():
                previous = None
                for value in self.bundles(topic, partition, events, lane):
                    if previous is not None and isinstance(previous, asyncio.Future):
                        await previous  # raises if refused: the next bundle must not overtake it
                    previous = await self.send(self.keyed_topic, key=None, value=value, partition=dest)
                    sent.append(previous)
        self._unsettled[(topic, partition)] = sent
        if records:
            self.position[(topic, partition)] = records[-1].offset + 1

    async def dead_letter(self, rec: Any, error: RejectedEvent, topic: str, partition: int) -> None:
        """Copy ``rec`` unchanged to the dead-letter topic with why and where from, and count
        it. Also for records of the internal keyed-events topic (``streams.aggregate``)."""
        self.rejected[error.reason] += 1
        await self.send(
            self.dlq_topic,
            key=rec.key,
            value=rec.value,
            headers=dead_letter_headers(rec.headers, error, topic, partition, rec.offset),
        )

    def retain(self, owned: set[tuple[str, int]]) -> None:
        """After a rebalance: forget the read positions of source partitions no longer owned
        (one that comes back resumes from its committed offset, not from a stale position)."""
        for key in [k for k in self.position if k not in owned]:
            del self.position[key]

    async def delivered(self, topic: str, partition: int) -> None:
        """Wait until the bundles of the previous batch of this source partition are delivered;
        raises the first failure (the worker then stops, see ``streams.delivery``)."""
        for fut in self._unsettled.pop((topic, partition), ()):
            if isinstance(fut, asyncio.Future):
                await fut

    def bundles(self, topic: str, partition: int, events: list[Event], lane: int) -> list[bytes]:
        """``events`` (of one source partition, in offset order) encoded as bundles of at most
        :data:`MAX_BUNDLE_EVENTS` events and :data:`MAX_BUNDLE_BYTES` bytes, in order: sent in
        this order to one partition, they reach it in offset order, which the aggregate stage's
        re-forward detection relies on. (A single event above the bound travels alone; events
        are at most ``SALESPULSE_MAX_EVENT_BYTES``.)"""
        encode = BUNDLE_ENCODER.encode
        out: list[bytes] = []
        i, n = 0, len(events)
        while i < n:
            step = MAX_BUNDLE_EVENTS
            if self._event_bytes:
                step = max(1, min(step, int(0.9 * MAX_BUNDLE_BYTES / self._event_bytes)))
            chunk = events[i : i + step]
            value = encode(Bundle(topic, partition, chunk, lane))
            self._event_bytes = len(value) / len(chunk)
            if len(value) > MAX_BUNDLE_BYTES and len(chunk) > 1:
                continue  # re-cut with the size per event just measured
            out.append(value)
            i += len(chunk)
        return out

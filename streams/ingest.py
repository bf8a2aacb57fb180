"""Stage 1: validate input records, dead-letter the bad ones, forward the good ones by rep.

Input topics may be keyed any way (the spec says the record key is not relied on), so the
aggregate stage cannot be partitioned by them. Each good event is routed by its rep (or team,
lead, ... when it has no rep) to a partition of the internal keyed-events topic: all of a rep's
events, its roster entry and every duplicate of an event then meet in one aggregate partition.
Events of one source partition go to an aggregate partition in one bundle per poll, so
forwarding costs one Kafka record per (source partition, poll, aggregate partition).

Nothing here awaits delivery per batch: Faust's commit flushes the producer before it commits
the input offsets, so an input offset is never committed before what it produced is durable.
A failed send is kept and raised on the next batch, which stops the worker rather than losing
data.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from zlib import crc32

from metrics.events import (
    BUNDLE_ENCODER,
    LANE_KPI,
    LANE_LEAD,
    Bundle,
    Event,
    RejectedEvent,
    Validator,
)
from metrics.leads import LEAD_LANE_TYPES

log = logging.getLogger(__name__)

MAX_BUNDLE_EVENTS = 4096
_ROUTE_FIELDS = ("rep_id", "team_id", "lead_id", "opportunity_id", "customer_id")

Send = Callable[..., Awaitable[Any]]


def route_key(event: Event) -> str:
    """The entity whose partition holds this event's state: its rep when it has one."""
    data = event.data
    for field in _ROUTE_FIELDS:
        value = getattr(data, field, None)
        if value:
            return value
    return f"{event.source}\x00{event.id}"



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
    log.exception("unexpected error validating a record; sent to the dead-letter topic")
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
        self._failure: BaseException | None = None

    async def process(self, topic: str, partition: int, records: Sequence[Any]) -> None:
        """Validate and forward ``records`` (aiokafka ConsumerRecords of one partition)."""
        if self._failure is not None:
            raise RuntimeError("a send of an earlier batch failed") from self._failure
        now = self.clock()
        decode = self.validator.decode
        by_dest: dict[tuple[int, int], list[Event]] = {}
        parts = self.partitions
        for rec in records:
            try:
                event = decode(rec.value, rec.offset, now)
            except Exception as exc:
                error = exc if isinstance(exc, RejectedEvent) else _unexpected(exc)
                self.rejected[error.reason] += 1
                self._watch(
                    await self.send(
                        self.dlq_topic,
                        key=rec.key,
                        value=rec.value,
                        headers=dead_letter_headers(rec.headers, error, topic, partition, rec.offset),
                    )
                )
                continue
            dest = (crc32(route_key(event).encode()) % parts, LANE_KPI)
            bucket = by_dest.get(dest)
            if bucket is None:
                bucket = by_dest[dest] = []
            bucket.append(event)
            lead_id = getattr(event.data, "lead_id", None)
            if lead_id and event.type in LEAD_LANE_TYPES:
                # Speed to lead needs the lead's creation and its touches together: a second
                # copy travels in the lead lane, routed by the lead.
                dest = (crc32(lead_id.encode()) % parts, LANE_LEAD)
                bucket = by_dest.get(dest)
                if bucket is None:
                    bucket = by_dest[dest] = []
                bucket.append(event)
        for (dest, lane), events in by_dest.items():
            for i in range(0, len(events), MAX_BUNDLE_EVENTS):
                value = BUNDLE_ENCODER.encode(
                    Bundle(topic, partition, events[i : i + MAX_BUNDLE_EVENTS], lane)
                )
                self._watch(await self.send(self.keyed_topic, key=None, value=value, partition=dest))
        if records:
            self.position[(topic, partition)] = records[-1].offset + 1

    def retain(self, owned: set[tuple[str, int]]) -> None:
        """After a rebalance: forget the read positions of source partitions no longer owned
        (one that comes back resumes from its committed offset, not from a stale position)."""
        for key in [k for k in self.position if k not in owned]:
            del self.position[key]

    def _watch(self, fut: Any) -> None:
        if isinstance(fut, asyncio.Future):
            fut.add_done_callback(self._on_sent)

    def _on_sent(self, fut: asyncio.Future) -> None:
        if not fut.cancelled() and fut.exception() is not None and self._failure is None:
            self._failure = fut.exception()

"""Stage 2: apply bundles to per-partition state; make state durable, then acknowledge.

The state of each partition of the keyed-events topic is a :class:`metrics.state.PartitionState`
in memory. A Faust changelog-backed table holds its snapshot parts under keys
``"<partition>/<part>"``, written to the changelog partition of the same number, so Faust moves
and recovers them with the partition on a rebalance or restart.

Records are acknowledged only after the snapshot that contains them is durable: the agent
iterates without acks and hands each batch to :meth:`AggregateStage.hold`; the flush (on a
timer) serialises the dirty parts, writes them, awaits their delivery and then acks what it
held. So a committed offset never runs ahead of durable state, and the number of state writes
is bounded by time (parts per partition per flush interval), not by the event rate.

Rebalancing (Faust's eager protocol revokes every partition, then assigns the new set): a
revoke drops the held records (they belong to the old generation and are never acked) and
suspends writes; the state stays. The new assignment (:meth:`AggregateStage.assign`) forgets
the partitions given away. When recovery completes (:meth:`AggregateStage.recovered`), a kept
partition keeps its in-memory state: Faust resumed its changelog where the previous recovery
stopped, so the table then holds only parts this worker wrote since, already in memory. A
partition new to this worker, or back after being given away (Faust then re-reads its
changelog from the start), is rebuilt from the changelog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, NamedTuple

import msgspec

from metrics.catalog import Catalog
from metrics.events import BUNDLE_DECODER, RejectedEvent
from metrics.labels import OTHER, LabelCaps
from metrics.parts import PartSplitter
from metrics.state import PartitionState, part_stamp
from metrics.windows import Calendar
from streams.pacing import BACKLOG, WAITED, Pacing, Rounds, send_all
from streams.publisher import Publisher, Record

log = logging.getLogger(__name__)


#: A gap in the delivered keyed-events offsets (contiguous: the topic has no transactions and is
#: not compacted) is re-read up to this many times, :data:`GAP_RETRY_SECONDS` apart, before it
#: is taken as records that no longer exist (deleted by retention while nobody read them).
GAP_REREADS = 3
GAP_RETRY_SECONDS = 2.0


class Gap(NamedTuple):
    """Records of a keyed partition were not delivered before later ones (see :meth:`apply`)."""

    offset: int  # the first offset missing: read the partition again from here
    applied: int | None  # the last offset of the batch that was applied (None: none of it)
    seek: bool  # a new re-read is due (False: one is already under way)


class StaleState(RuntimeError):
    """A kept partition's changelog holds parts newer than the state in memory: another worker
    wrote it meanwhile (this one was out of the group without noticing). Only a restart,
    which recovers the whole changelog, makes the state exact again."""


class AggregateStage:
    """Owns the in-memory state of this worker's keyed-events partitions."""

    def __init__(
        self,
        table: Any,
        catalog: Catalog,
        calendar: Calendar,
        *,
        grace_seconds: float,
        dedup_horizon_seconds: float,
        waited: Callable[[str | None, float, float], float] | None = None,
        lead_wait_horizon_seconds: float | None = None,
        label_caps: LabelCaps | None = None,
        part_bytes: int = 1024 * 1024,
        generation: Callable[[], int] = lambda: 0,
        publisher: Publisher | None = None,
        send: Callable[..., Awaitable[Any]] | None = None,
        event_time: bool = False,
        pacing: Pacing = BACKLOG,
        flush_seconds: float = 0.5,
        changelog: Callable[[int, str, bytes | None], Awaitable[Any]] | None = None,
    ) -> None:
        self.table = table
        #: sends one part (partition, table key, value) to the changelog; its delivery future.
        #: By default through the table (Faust's producer buffer); the app sends them straight
        #: to the producer instead (``streams.app.Service._write_changelog``)
        self.changelog = changelog or self._via_table
        self.catalog = catalog
        self.calendar = calendar
        self.state_kw = {
            "grace_seconds": grace_seconds,
            "dedup_horizon_seconds": dedup_horizon_seconds,
            "waited": waited,
            "label_caps": label_caps,
        }
        if lead_wait_horizon_seconds is not None:
            self.state_kw["lead_wait_horizon_seconds"] = lead_wait_horizon_seconds
        self.part_bytes = part_bytes
        self.generation = generation
        self.publisher = publisher
        self.send = send
        #: hands a round's roll-up records to this worker's own roll-up stage as they are sent
        #: (``RollupStage.local``): the scopes it owns show them without the trip through Kafka
        self.local: Callable[[list[Record]], None] | None = None
        #: windows close by event time (each partition's watermark), not the wall clock
        self.event_time = event_time
        self.offset_resets = 0
        self.states: dict[int, PartitionState] = {}
        #: per partition: its parts as changelog records of at most ``part_bytes`` (metrics.parts)
        self.splitters: dict[int, PartSplitter] = {}
        self.held: dict[int, list[Any]] = {}
        self.position: dict[int, int] = {}
        self.suspended: set[int] = set()  # revoked, new assignment not known yet: no writes
        #: partitions with a durable snapshot of their state's epoch: their partials go out
        #: without waiting for their snapshot (:meth:`publish`)
        self.early: set[int] = set()
        self.processed: Counter[str] = Counter()
        self.duplicates = 0
        self.late = 0
        self.leads_expired = 0  # waiting leads forgotten past the wait horizon
        self.flushes = 0  # flushes done
        self.flushes_begun = 0  # flushes begun: one begun after a record was held acks it
        self.parts_written = 0
        #: label -> values counted as "other" (bounded cardinality, metrics.labels)
        self.label_overflow: Counter[str] = Counter()
        #: delivery gaps found by the last :meth:`apply` of a partition, for the caller
        self.gaps: dict[int, Gap] = {}
        self.gaps_skipped = 0  # gaps taken as records deleted by retention
        self.gap_rereads = 0  # re-reads started because a record arrived past a missing one
        self._rereads: dict[int, tuple[int, float, int]] = {}  # partition -> (offset, at, tries)
        self._bundled = 0  # events in the bundles applied ...
        self._bundles = 0  # ... and the bundles
        self._lock = asyncio.Lock()
        #: a costly flush holds off the next (streams.pacing): its cost is the loop's time
        #: spent serialising, not delivery's
        self.rounds = Rounds(0.0, pacing)
        self._flushed_behind = False  # the last flush was made in a backlog
        #: a flush of a caught-up worker (:meth:`idle_flush_due`) waits this long after the last
        self.flush_seconds = flush_seconds

    # -- state per partition --------------------------------------------------------------
    def state_for(self, partition: int) -> PartitionState:
        state = self.states.get(partition)
        if state is None:
            prefix = f"{partition}/"
            records = [
                (key[len(prefix) :], value)
                for key, value in list(self.table.data.items())
                if key.startswith(prefix)
            ]
            splitter, parts = PartSplitter.assemble(records, self.part_bytes)
            state = PartitionState.restore(parts, self.catalog, self.calendar, **self.state_kw)
            self.states[partition] = state
            self.splitters[partition] = splitter
            # The parts live on in ``state``; their bytes in the table would only double the
            # memory. Faust re-reads the whole changelog of a partition newly assigned (the
            # memory store persists no offset), and assign() has then dropped any old state.
            for key, _ in records:
                self.table.data.pop(prefix + key, None)
            log.info(
                "partition %d: state restored from %d parts (applied up to offset %d), %d changelog records",
                partition, len(parts), state.applied, len(records),
            )
        return state

    def state_keys(self) -> int:
        """Keys this worker holds in state: window sums (kpi, rep, team, *dims), counted once
        per live window and owned partition, plus the leads. A few ``len`` calls per window:
        cheap enough for every scrape (it folds pending hits, which a render does anyway)."""
        return sum(
            sum(len(w.values) for w in state.windows.values()) + len(state.leads.leads)
            for state in self.states.values()
        )

    def apply(self, partition: int, records: Iterable[Any]) -> list[tuple[Any, RejectedEvent]]:
        """Apply the records (aiokafka ConsumerRecords holding bundles) of one batch.

        The keyed-events topic is input too: a record that is not a bundle (written there by
        something else, or damaged) is skipped and returned with why, for the dead-letter
        topic, instead of stopping the worker on it after every restart."""
        state = self.state_for(partition)
        decode = BUNDLE_DECODER.decode
        last = None
        bad: list[tuple[Any, RejectedEvent]] = []
        for rec in records:
            expected = state.applied + 1
            if state.applied >= 0 and rec.offset > expected and self._missing(partition, expected, rec.offset, last):
                break
            last = rec.offset
            try:
                bundle = decode(rec.value)
            except (msgspec.DecodeError, TypeError) as exc:
                log.error("partition %d offset %d: not a bundle (%s); dead-lettered", partition, rec.offset, exc)
                bad.append((rec, RejectedEvent("unprocessable", f"not a salespulse bundle: {exc}")))
                state.skip(rec.offset)
                continue
            state.apply(bundle, rec.offset)
            self._bundled += len(bundle.events)
            self._bundles += 1
        if last is not None:
            self.position[partition] = last + 1
        pending = self._rereads.get(partition)
        if pending is not None and state.applied >= pending[0]:
            del self._rereads[partition]  # the gap was read again: closed
        self._collect(state)
        return bad

    def _missing(self, partition: int, expected: int, offset: int, last: int | None) -> bool:
        """Record ``offset`` arrived while ``expected`` was never delivered: whether to stop
        here (the caller re-reads from ``expected``; see :class:`Gap`), or, once the re-reads
        are spent, to go on without it.

        Applying past a missing record would lose it for good: the state's applied offset
        would move past it, and a later delivery would count as already applied. (Seen once in
        a SIGKILL test under load: a record was skipped in delivery and the commit moved past
        it; Faust's commit logic tolerates one missing offset after the committed one, and takes
        an offset jump between two messages for records that do not exist.)"""
        now = time.monotonic()
        pending = self._rereads.get(partition)
        if pending is not None and pending[0] == expected:
            if now - pending[1] < GAP_RETRY_SECONDS:
                self.gaps[partition] = Gap(expected, last, False)  # already under way
                return True
            tries = pending[2] + 1
        else:
            tries = 1
        if tries > GAP_REREADS:
            log.error(
                "partition %d: offsets %d..%d were never delivered after %d re-reads (deleted by "
                "retention?): going on without them", partition, expected, offset - 1, GAP_REREADS)
            self.gaps_skipped += 1
            self._rereads.pop(partition, None)
            return False
        log.warning(
            "partition %d: offset %d arrived before %d..%d, which were not delivered: not applied; "
            "reading the partition again from %d (try %d)", partition, offset, expected, offset - 1,
            expected, tries)
        self._rereads[partition] = (expected, now, tries)
        self.gap_rereads += 1
        self.gaps[partition] = Gap(expected, last, True)
        return True

    def events_per_record(self) -> float:
        """Events per keyed-events record (bundle) so far: what a lag of that topic means in
        events."""
        return max(1.0, self._bundled / self._bundles) if self._bundles else 1.0

    def hold(self, partition: int, event: Any) -> None:
        """Keep ``event`` unacknowledged until the state containing it is durable."""
        self.held.setdefault(partition, []).append(event)

    def _collect(self, state: PartitionState) -> None:
        for topic, partition, mark, offset in state.offset_resets:
            log.warning(
                "%s[%d]: offset %d is at or below the %d already read, and its event is new: the "
                "partition's offsets went backwards (topic recreated or group reset); its records "
                "are counted again from here (duplicates still recognised by source and id)",
                topic, partition, offset, mark,
            )
        self.offset_resets += len(state.offset_resets)
        state.offset_resets.clear()
        for label, n in state.overflow.items():
            if label not in self.label_overflow:
                cap = state.label_caps.of(label) if state.label_caps is not None else None
                log.warning(
                    "label %r: a partition holds its cap of %s distinct values; further values "
                    "are counted as %r (salespulse_label_overflow_total{label=%r})",
                    label, cap, OTHER, label,
                )
            self.label_overflow[label] += n
        state.overflow.clear()
        processed, duplicates, late = state.drain_counters()
        self.processed.update(processed)
        self.duplicates += duplicates
        self.late += late
        self.leads_expired += state.leads.drain_expired()

    # -- durability -----------------------------------------------------------------------
    def idle_flush_at(self) -> float:
        """When a flush of a worker that has caught up (``flush(idle=True)``) is due: one state
        flush interval after the last flush, whatever that one cost.

        The end of a backlog is where the last flush was costliest (every window changed), and
        the pacing would hold the snapshot of what remains for ten times that: the last records
        would wait a second or more to become durable and committed, for nothing, as nothing
        competes with a snapshot any more. Still at most one flush per interval, but for the
        first after a flush made in a backlog: at once (the records applied while the
        backlog's last snapshot was written waited the interval: ~15 % of the benchmark's
        backlog)."""
        if self._flushed_behind:
            return self.rounds.last
        return self.rounds.last + self.flush_seconds

    def holding(self) -> bool:
        """Whether records wait for a snapshot to be acknowledged."""
        return any(self.held.values())

    def _due(self, idle: bool) -> bool:
        now = time.monotonic()
        return self.rounds.due(now) or (idle and now >= self.idle_flush_at())

    async def flush(self, force: bool = False, idle: bool = False) -> None:
        """Snapshot every dirty partition, await delivery, then ack the records it covers.

        Serialising the dirty parts runs on the event loop. With a large state mid-backlog a
        flush costs ~0.1 s, so a tick is skipped until ten times the last flush's cost has
        passed (:mod:`streams.pacing`; a few times it once caught up): snapshots never take
        more than ~10% of the loop in a backlog, and in live operation (small deltas) the
        flush interval stays the configured one. Folding the pending hits into the windows
        (in ``expire``) is not counted: that work is due whenever a flush runs.
        """
        if not force and not self._due(idle):
            return
        async with self._lock:
            if not force and not self._due(idle):
                return  # another flush ran while this one waited for the lock
            self.flushes_begun += 1
            generation = self.generation()
            pending: list[tuple[int, list[Any], list[Any], list[Record]]] = []
            cost = 0.0
            for partition, state in self.states.items():
                if partition not in self.suspended:
                    self._expire(state)  # folds what was applied: the round's work is known
            # the partitions whose epoch is not durable yet publish here, once their snapshot is
            publishing = self.publisher is not None \
                and (self.event_time or any(p not in self.early for p in self.states)) \
                and self.publisher.due(lambda: self._changed_size(
                    p for p in self.states if self.event_time or p not in self.early))
            published = 0.0  # the loop's time spent on this round's publication
            waited = 0.0  # the time its sends waited for the producer
            try:
                for partition, state in list(self.states.items()):
                    if partition in self.suspended:
                        continue  # maybe no longer ours: another worker may be recovering it
                    held = self.held.pop(partition, [])
                    futures = []
                    records = None
                    # again, by what the agent applied while the partitions before this one
                    # wrote their snapshots: the watermark the snapshot holds (and the
                    # publication announces) is the one its windows were expired by
                    self._expire(state)
                    if state.dirty:
                        began = time.monotonic()
                        records = self.splitters[partition].split(state.snapshot())
                        cost += time.monotonic() - began
                    # Captured now, from exactly the state the snapshot holds (before the writes
                    # below yield to the loop, where the agent applies more records to the state:
                    # a watermark ahead of the snapshot let the roll-up close a window by event time
                    # before another source's partial for it came); sent once it is durable.
                    outputs: list[Record] = []
                    if publishing and (self.event_time or partition not in self.early):
                        began = time.monotonic()
                        outputs = self.publisher.capture(partition, state)  # type: ignore[union-attr]
                        published += time.monotonic() - began
                    if records is not None:
                        futures, spent = await self._write_all(partition, records)
                        cost += spent
                        self.parts_written += len(futures)
                    pending.append((partition, futures, held, outputs))
                for partition, futures, held, outputs in pending:
                    if futures:
                        await asyncio.gather(*futures)
                    if self.generation() != generation:
                        continue
                    for event in held:
                        event.ack()
                    if outputs and self.local is not None:
                        self.local(outputs)
                    cost_sent, waited_sent = await send_all(self.send, outputs)  # type: ignore[arg-type]
                    published += cost_sent
                    waited += waited_sent
                    if futures and partition in self.states:
                        self.early.add(partition)  # the snapshot's meta holds the state's epoch
            finally:  # also when a send fails or the worker stops: the next round may run
                if publishing:
                    self.publisher.spent(published, waited)  # type: ignore[union-attr]
            self.flushes += 1
            self.rounds.done(time.monotonic(), cost)
            self._flushed_behind = self.rounds.pacing.behind()

    def _expire(self, state: PartitionState) -> None:
        state.expire(None if self.event_time else time.time())
        self.leads_expired += state.leads.drain_expired()

    async def publish(self) -> None:
        """A publication round (when one is due) of the partitions whose epoch is durable,
        without waiting for their latest snapshot to be: their partials show state up to what
        this worker has applied, however long the broker takes with the snapshot.

        Exact all the same: should this worker stop before that state is durable, the next
        owner restores the last durable snapshot, whose epoch is this state's, and so has a
        later epoch (``metrics.state.PartitionState.epoch``). Its partials replace these in the
        roll-up stage whatever their versions, and it replays the same keyed-events records
        (they are in the topic: this worker read them there) in the same order, with the same
        dedup: it publishes the values shown here again, and then the ones after. (Published
        only after a durable snapshot instead, a new owner's partials of an older version than
        what the lost owner had shown would be refused as stale, and a rep whose parts then
        did not change again would keep the lost owner's partial.) A partition whose epoch is
        not durable yet (just restored) publishes from :meth:`flush`, once its snapshot is.

        Closing windows by event time (replays of history, where nobody waits for a value),
        every partition publishes from :meth:`flush`, from the state its snapshot holds, as
        before: published ahead, a source's partials of a window could reach the roll-up
        stage after its watermark had closed the window there (the CRM replay lost a
        quarter's team partial that way).
        """
        publisher = self.publisher
        if publisher is None or self.event_time or not self.early \
                or not publisher.due(lambda: self._changed_size(self.early)):
            return  # closing windows by event time: partials go out with snapshots (see below)
        began = time.monotonic()
        outputs: list[Record] = []
        for partition in sorted(self.early):
            state = self.states.get(partition)
            if state is None or partition in self.suspended:
                continue
            outputs += publisher.capture(partition, state)
        if outputs and self.local is not None:
            self.local(outputs)
        cost = time.monotonic() - began
        cost_sent = waited = 0.0
        try:
            cost_sent, waited = await send_all(self.send, outputs)  # type: ignore[arg-type]
        finally:  # also when a send fails or the worker stops: the next round may run
            publisher.spent(cost + cost_sent, waited)

    def _changed_size(self, partitions: Iterable[int]) -> int:
        """The keys of the changed windows of these partitions: what a round reads while behind."""
        states, suspended = self.states, self.suspended
        return sum(states[p].changed_size() for p in partitions
                   if p in states and p not in suspended)

    async def _write_all(self, partition: int, records: list[tuple[str, bytes | None]]) -> tuple[list[Any], float]:
        """Send a snapshot's parts to the changelog, one after the other (their order is what
        makes a snapshot cut short a prefix, ``metrics.state``): their delivery futures, and
        the loop's time the sends took (not their waits for room in the producer's buffer).
        The table's local dict is not kept: the state is the in-memory copy (see
        :meth:`state_for`)."""
        futures = []
        cost = 0.0
        clock = time.perf_counter
        for key, value in records:
            began = clock()
            futures.append(await self.changelog(partition, f"{partition}/{key}", value))
            took = clock() - began
            if took < WAITED:
                cost += took
        return futures, cost

    async def _via_table(self, partition: int, table_key: str, value: bytes | None) -> Any:
        """One part through the table (Faust's producer buffer, drained by a task of its own
        and, beyond a hundred pending, by the consumer before it delivers more records)."""
        if value is None:
            return self.table.send_changelog(partition, table_key, None, value_serializer="raw")
        return self.table.send_changelog(partition, table_key, value)

    # -- rebalancing ----------------------------------------------------------------------
    def revoke(self, partitions: Iterable[int]) -> None:
        """A rebalance began. Held records belong to the old generation and are never acked
        now (the consumer settled what it could before the revoke); drop them. The state stays
        until :meth:`assign` tells whether the partition is kept; meanwhile it is not written."""
        for partition in partitions:
            self.held.pop(partition, None)
            self.suspended.add(partition)

    def assign(self, partitions: Iterable[int]) -> None:
        """The new assignment: forget the partitions no longer owned; their new owner recovers
        them, and should one come back it is rebuilt from its whole changelog."""
        owned = set(partitions)
        for partition in {*self.states, *self.held, *self.position, *self.suspended} - owned:
            self._forget(partition)
        self.suspended.clear()

    def recovered(self, partitions: Iterable[int], read: Iterable[int]) -> None:
        """Recovery of the assignment completed: have the state of every owned partition.

        A kept partition's state is in memory, and the table holds only the parts this worker
        wrote since the previous recovery (Faust resumed the changelog there): their bytes are
        dropped. Any other partition is rebuilt from the table (its whole changelog) once its
        changelog is ``read`` to the end: Faust calls back after a recovery even when another
        rebalance has begun meanwhile, and a partition of that newer assignment has not been
        read yet; built then, its state would be empty. It is built at the next callback.
        """
        owned = set(partitions)
        done = set(read)
        for partition in set(self.states) - owned:
            self._forget(partition)
        for partition in sorted(owned):
            if partition in self.states:
                self._drop_reread(partition)
            elif partition in done:
                self.state_for(partition)
            else:
                log.info("partition %d: changelog not read to its end yet", partition)

    def _drop_reread(self, partition: int) -> None:
        state = self.states[partition]
        known = max(state.applied, state.max_stamp)
        prefix = f"{partition}/"
        keys = [k for k in self.table.data if k.startswith(prefix)]
        newer = [k for k in keys if self.table.data[k] is not None and part_stamp(self.table.data[k]) > known]
        if newer:
            raise StaleState(
                f"partition {partition}: changelog parts {newer[:3]} are newer than the state in "
                f"memory (offset {known}): another worker wrote them"
            )
        for key in keys:
            self.table.data.pop(key, None)
        log.info(
            "partition %d: state kept through the rebalance (applied up to offset %d, %d parts re-read)",
            partition, state.applied, len(keys),
        )

    def _forget(self, partition: int) -> None:
        self.states.pop(partition, None)
        self.gaps.pop(partition, None)
        self._rereads.pop(partition, None)
        self.early.discard(partition)
        self.splitters.pop(partition, None)
        self.held.pop(partition, None)
        self.position.pop(partition, None)
        self.suspended.discard(partition)
        if self.publisher is not None:
            self.publisher.forget(partition)
        prefix = f"{partition}/"
        for key in [k for k in self.table.data if k.startswith(prefix)]:
            self.table.data.pop(key, None)

"""Batch delivery for Faust: one message per (topic-partition, poll) on designated topics.

Stock Faust turns every Kafka record into a message, an event, queue hand-offs and a
`wait_first` of four tasks: about 170 µs of machinery per record. For the topics named in
``app.batched_topics`` this consumer instead yields one :class:`ConsumerMessage` per partition
and poll whose value is the list of aiokafka records, and whose offset is the last record's.
Everything else stays Faust's: group membership, heartbeats, the commit timer, flow control,
rebalancing, and the per-record path for every other topic (changelogs and standbys must stay
per record because recovery reads them through this same path).

Offset bookkeeping (see shared notes on faust-internals, §2–3):

* Ack of a range: Faust records only ``message.offset`` (the last record) when a batch is acked.
  Each batch message carries its first offset (:class:`BatchMessage`) and is kept, per
  partition, until it is acked; before Faust computes a commit offset, each acked one turns
  into a gap interval ``[first, last)``, which Faust already treats as acked. (Faust's
  accelerated stream path acks inline, without calling ``Consumer.ack``, so the range cannot be
  added at the ack itself.) Ranges are looked up by message, not by last offset alone: the same
  records fetched twice with other batch boundaries (a re-read after a seek) end at the same
  offset, and a table keyed by it lost the first range, which stopped the partition's commits
  for good at that range's first offset.
* Gaps: `_drain_messages` sees the offset jump from one batch's last record to the next batch's
  last and would mark the whole new batch as an implicit ack. We trim that to the real gap
  (before the batch's first record: transaction markers, compacted or deleted records), using
  the first offset of the message just yielded to it.

Settling on a stop or a revoke: Faust's ``wait_empty`` (run by ``App._stop_consumer`` on a stop
and by ``App._on_partitions_revoked`` on a rebalance) waits until every message handed to an
agent is acked. The aggregate stage acks only once the state holding a record is durable, on
its flush timer, and on a stop that timer is already stopped, so stock ``wait_empty`` waited
forever. :meth:`BatchConsumer.wait_empty` asks the app to settle what it holds first
(``app.settle_held``: snapshot, await delivery, ack), commits, and gives up after
``app.stop_timeout`` seconds: what is then still unacked is simply not committed, and the next
owner replays it (exactly: durable state records the offsets it reflects).

Taking up partitions (after a start or a rebalance): Faust seeks the stream partitions to their
committed offsets with the fetcher running, then resumes flow control, which empties the agents'
queues. :meth:`BatchConsumer.perform_seek` delivers nothing of those partitions until then and
rewinds what it held back, so no fetch from the committed offset is emptied with the queues
(records lost to the process, with the partition's lag stuck above 0 until a restart).

No commit after a failure: once a send failed or the app crashed (``app.commit_refusal()``),
:meth:`BatchConsumer._commit` refuses every commit and :meth:`BatchConsumer.wait_empty` settles
nothing: the next start replays from the last commit. (Stock Faust commits on the way down from
a crash, through a consumer thread the crash has already stopped: the commit never returned and
the crashed worker hung instead of exiting.)
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from typing import Any

from faust.transport.consumer import CONSUMER_WAIT_EMPTY
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, Message
from faust.types.tuples import ConsumerMessage
from mode import Service

#: How long the broker may hold a fetch that finds no new data. Faust hard-codes 1,500 ms.
#: aiokafka keeps one fetch in flight per broker, covering every partition without buffered
#: records; when that happens to be only idle partitions (changelogs, caught-up keyed-events),
#: the broker parks it for the whole wait and no partition of that broker is fetched meanwhile.
#: In a two-stage pipeline that stalled the worker for 1.5 s at a time (a third of a backlog's
#: wall time, measured). An idle worker sends about 1,000 / this many empty fetches a second.
FETCH_MAX_WAIT_MS = 50

#: How long a partition's commit may be held by an offset that no message in flight covers
#: before the partition is re-read from it (``BatchConsumer._note_hole``).
HOLE_REREAD_SECONDS = 1.0


class BatchConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    """Faust's consumer thread, with a short broker-side fetch wait (:data:`FETCH_MAX_WAIT_MS`)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read by AIOKafkaConsumer.start()
        # static membership (read by AIOKafkaConsumer.start(); Faust has no setting for it)
        consumer._group_instance_id = getattr(self.app, "instance_id", None) or None
        return consumer

    def seek_if_past(self, tp: TP, last: int, offset: int) -> bool:
        """:func:`seek_if_past` on this thread's aiokafka consumer. Called from the app's loop
        like Faust's own ``seek``: aiokafka moves a position only when it hands records out, and
        the consumer's next fetch waits for the drain loop to ask for it."""
        return seek_if_past(self._ensure_consumer(), tp, last, offset)


def seek_if_past(consumer: Any, tp: Any, last: int, offset: int) -> bool:
    """Seek ``tp`` to ``offset`` if the aiokafka ``consumer``'s fetch position is still past
    ``last``, i.e. no seek moved it since records up to ``last`` were handed out; whether it
    did (False too for a partition not assigned)."""
    subscription = consumer._subscription.subscription
    assignment = subscription.assignment if subscription is not None else None
    state = assignment.state_value(tp) if assignment is not None else None
    if state is None or not state.has_valid_position or state.position <= last:
        return False
    consumer.seek(tp, offset)
    return True


class BatchMessage(ConsumerMessage):
    """One partition's records of one poll, delivered as one message: its ``offset`` is the last
    record's, ``first_offset`` the first record's."""

    __slots__ = ("first_offset",)

    def __init__(self, *args: Any, first_offset: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.first_offset = first_offset


class BatchConsumer(faust_aiokafka.Consumer):
    """aiokafka-backed Faust consumer that delivers designated topics in batches."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._batches: dict[TP, dict[int, list[BatchMessage]]] = {}  # unacked, by last offset
        self._yielded: dict[TP, BatchMessage] = {}  # the batch just handed to _drain_messages
        #: partitions whose commit is held by offsets no message in flight will ever ack:
        #: tp -> (committed offset, when to re-read from it, re-reads so far)
        self._holes: dict[TP, tuple[int, float, int]] = {}
        self.holes_reread = 0
        self._rereading: dict[TP, int] = {}  # tp -> offset a re-read seeked it to
        #: stream partitions are being seeked to their committed offsets: nothing of them is
        #: delivered until flow resumes (:meth:`perform_seek`)
        self._settling = False

    def _new_consumer_thread(self) -> BatchConsumerThread:
        return BatchConsumerThread(self, loop=self.loop, beacon=self.beacon)

    @property
    def _batched(self) -> frozenset[str]:
        return getattr(self.app, "batched_topics", frozenset())

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        if self._holes:
            await self._reread_holes()
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            await self._rewind(records.items())
            try:
                await self.perform_seek()
            except Exception as exc:  # pragma: no cover - mirrors stock behaviour
                self.log.warning(f"exception performing seek when flow not active {exc}")
            return
        batched = self._batched
        to_message = self._to_message
        items = [(tp, recs) for tp, recs in records.items() if recs]
        for i, (tp, recs) in enumerate(items):
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                await self._rewind(items[i:])
                break
            if not (
                active_partitions is None
                or tp in active_partitions
                or tp in self._buffered_partitions
            ) or (self._settling and tp.topic not in self.app.tables.changelog_topics):
                await self._rewind([(tp, recs)])
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            reread = self._rereading.get(tp)
            if reread is not None and recs[0].offset <= reread:
                # the re-read has arrived: a message fetched before it may have moved Faust's
                # read offset past these records, which it would then drop
                del self._rereading[tp]
                self._read_offset[tp] = None
            if tp.topic in batched:
                yield tp, self._batch_message(tp, recs, generation_id)
            else:
                for record in recs:
                    yield tp, to_message(tp, record)

    async def _rewind(self, dropped: Iterable[tuple[TP, list[Any]]]) -> None:
        """Seek partitions whose fetched records are dropped back to the first of them.

        aiokafka advances a partition's position when it hands records out. Stock Faust drops
        the records of a fetch that returns while flow is stopped (a rebalance began) and then
        seeks to the committed offsets, which restores stream partitions but not changelog
        partitions: they have no committed offset. A changelog partition that recovery had just
        seeked back to its start then sat at its end with nothing delivered, and recovery waited
        forever ("No event received for active tp ... since recovery start"; seen about once in
        eight runs of the rebalance test, when a worker takes partitions back). Seeking back
        re-delivers exactly what was dropped; stream partitions are then seeked to their
        committed offsets as before.

        Only if no seek moved the partition since these records were handed out: records
        fetched before a seek are read again from where it went, and seeking back to them
        would undo it (:meth:`_seek_if_past`).
        """
        assigned = self.assignment()
        for tp, recs in dropped:
            if recs and tp in assigned:
                try:
                    await self._seek_if_past(tp, recs[-1].offset, recs[0].offset)
                except Exception as exc:  # revoked meanwhile: its next owner reads it
                    self.log.info("not rewinding %r: %r", tp, exc)

    async def _seek_if_past(self, tp: TP, last: int, offset: int) -> bool:
        return self._thread.seek_if_past(tp, last, offset)

    async def perform_seek(self) -> None:
        """Seek the stream partitions to their committed offsets, delivering nothing of them
        until flow resumes (:meth:`resume_flow`).

        Faust's recovery (``Recovery.on_recovery_completed``, ``_resume_streams``) resumes the
        stream partitions, awaits this seek with the fetcher running, then resumes flow
        control, which clears the agents' queues, then the consumer's flow. A fetch from the
        committed offset that landed in between was delivered to an agent's queue and cleared
        with it, while the read offset and the fetch position had moved past it: those records
        were never processed, nor committed, until a restart; the partition kept a lag and, if
        nothing came after them, nothing showed the gap (faust-streaming issue 596; about one
        in three SIGKILL restarts on a busy box). Held back here, they are rewound instead
        (:meth:`_rewind`) and delivered once the queues are cleared.
        """
        self._settling = True
        await super().perform_seek()

    def resume_flow(self) -> None:
        super().resume_flow()
        self._settling = False  # flow control was resumed just before: the queues are clear

    def _batch_message(self, tp: TP, recs: list[Any], generation_id: int) -> BatchMessage:
        first, last = recs[0], recs[-1]
        timestamp = last.timestamp / 1000.0 if last.timestamp is not None else None
        message = BatchMessage(
            last.topic,
            last.partition,
            last.offset,
            timestamp,
            last.timestamp_type,
            [],
            None,
            recs,
            None,
            0,
            sum(r.serialized_value_size for r in recs),
            tp,
            generation_id=generation_id,
            first_offset=first.offset,
        )
        self._batches.setdefault(tp, {}).setdefault(last.offset, []).append(message)
        self._yielded[tp] = message
        return message

    def _new_offset(self, tp: TP) -> int | None:
        pending = self._batches.get(tp)
        if pending:
            committed = self._committed_offset[tp]
            gap = self._gap[tp]
            added = False
            for last in list(pending):
                keep = []
                for message in pending[last]:
                    if message.acked:
                        first = message.first_offset
                        if committed is not None:
                            first = max(first, committed)
                        if first < last:
                            gap.addi(first, last)
                            added = True
                    elif committed is None or last >= committed:
                        keep.append(message)  # still in flight (else: passed by a commit)
                if keep:
                    pending[last] = keep
                else:
                    del pending[last]
            if added:
                gap.merge_overlaps()
        offset = self._acked_up_to(tp)
        if offset is None and (self._acked[tp] or self._held_by_stale(tp)):
            self._note_hole(tp)
        else:
            self._holes.pop(tp, None)
        return offset

    def _acked_up_to(self, tp: TP) -> int | None:
        """Faust's ``_new_offset`` without its duplicates: the offset after the run of acked
        offsets (acks and gap intervals) that starts at the committed one, or None.

        Faust extends its list of acked offsets by the gap intervals, and an offset acked twice
        (the same records fetched again after a seek, or re-read) then broke its run of
        consecutive numbers at every repeat: such a partition committed one offset per commit
        round. Here acks and gaps are a set."""
        acked = self._acked[tp]
        if not acked:
            return None
        committed = self._committed_offset[tp]
        done = set(acked)
        highest = max(done)
        gap = self._gap[tp]
        if gap:
            for interval in gap.overlap(0, highest):
                done.update(range(interval.begin, interval.end))
                highest = max(highest, interval.end - 1)
            gap.chop(0, highest + 1)
        if committed is not None:
            done = {o for o in done if o >= committed}
        ordered = sorted(done)
        acked[:] = ordered
        if not ordered or (committed is not None and ordered[0] - committed > 1):
            return None  # (Faust's tolerance of one: its committed offsets run one behind)
        end = 0
        while end + 1 < len(ordered) and ordered[end + 1] == ordered[end] + 1:
            end += 1
        del acked[: end + 1]
        self._acked_index[tp].difference_update(ordered[: end + 1])
        return ordered[end] + 1

    def _holding(self, tp: TP, committed: int) -> Iterator[BatchMessage]:
        """The messages of ``tp`` in flight (not acked) that cover its ``committed`` offset."""
        for last, messages in (self._batches.get(tp) or {}).items():
            if last >= committed:
                for m in messages:
                    if m.first_offset <= committed and not m.acked:
                        yield m

    def _held_by_stale(self, tp: TP) -> bool:
        """The committed offset is covered by a message of an older generation, not acked: Faust's
        stream skips such a message without acking it. With nothing later acked (it was the
        partition's last batch) no ack would ever show the hole, and its records would wait
        for the partition's next record to be applied and committed."""
        committed = self._committed_offset[tp]
        if committed is None:
            return False
        generation = self.app.consumer_generation_id
        return any(m.generation_id != generation for m in self._holding(tp, committed))

    def _note_hole(self, tp: TP) -> None:
        """Later offsets are acked but the committed one is not (or a skipped message of an older
        generation holds it, :meth:`_held_by_stale`): fine while a message of this generation
        that holds it is in flight. If none does (Faust's stream skips a message of
        a stale generation without acking it; a range forgotten at a revoke), nothing will ever
        ack it and the partition would never commit again: re-read it (``_reread_holes``)."""
        committed = self._committed_offset[tp]
        if committed is None:
            return
        generation = self.app.consumer_generation_id
        if any(m.generation_id == generation for m in self._holding(tp, committed)):
            self._holes.pop(tp, None)
            return
        hole = self._holes.get(tp)
        if hole is None or hole[0] != committed:
            self._holes[tp] = (committed, time.monotonic() + HOLE_REREAD_SECONDS, 0)

    async def _reread_holes(self) -> None:
        now = time.monotonic()
        due = [(tp, c, n) for tp, (c, at, n) in self._holes.items() if at <= now]
        if not due:
            return
        assigned = self.assignment()
        for tp, committed, tries in due:
            # Again if it persists, twice at most: an offset that does not exist for this
            # consumer (a transaction marker) is never delivered, and re-reading cannot help.
            self._holes[tp] = (committed, now + 5 * HOLE_REREAD_SECONDS if tries < 1 else float("inf"),
                               tries + 1)
            if tp not in assigned or self._committed_offset[tp] != committed:
                continue
            self.log.warning(
                "%r: offset %d is acked by no message in flight while later ones are: re-reading "
                "from it (re-read records are recognised as applied)", tp, committed)
            self.holes_reread += 1
            await self.reread(tp, committed)

    def cut(self, message: BatchMessage, upto: int | None) -> None:
        """Only the records of ``message`` up to offset ``upto`` were applied (None: none):
        acking it then commits no further than that, and a message that applied nothing is
        forgotten unacked (see ``streams.aggregate.Gap``)."""
        pending = self._batches.get(message.tp, {})
        group = pending.get(message.offset)
        if group is not None and message in group:
            group.remove(message)
            if not group:
                del pending[message.offset]
        if upto is None or upto < message.first_offset:
            message.acked = True  # nothing of it counts: never acked, never awaited
            self._unacked_messages.discard(message)
            return
        message.offset = upto
        message.value = [r for r in message.value if r.offset <= upto]
        pending.setdefault(upto, []).append(message)

    async def reread(self, tp: TP, offset: int) -> None:
        """Read ``tp`` again from ``offset``: a commit held by nothing (``_reread_holes``), or
        records not delivered before later ones (``streams.aggregate.Gap``). The drain loop must
        not drop the re-read records: Faust's read offset is reset now, and again when they
        arrive (see :meth:`getmany`)."""
        if tp not in self.assignment():
            return  # its next owner reads it from the committed offset
        try:
            await self._seek(tp, offset)
        except Exception as exc:  # revoked meanwhile: its next owner reads it
            self.log.info("not re-reading %r: %r", tp, exc)
            return
        self._read_offset[tp] = None
        self._rereading[tp] = offset

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        message = self._yielded.pop(tp, None)
        if message is not None and message.offset == offset_to:
            offset_to = message.first_offset - 1  # only what lies before the batch is a gap
        await super()._add_gap(tp, offset_from, offset_to)

    @Service.transitions_to(CONSUMER_WAIT_EMPTY)
    async def wait_empty(self) -> None:
        """Settle held records, commit, and wait for the remaining acks, within the stop timeout.

        Called with flow stopped and the agents' buffers cleared, so the set of unacked
        messages only shrinks. The app's settle hook runs shielded: cut short by the timeout it
        still completes in the background (a snapshot is never abandoned half-sent).
        """
        refusal = self._commit_refusal()
        if refusal is not None:
            self.log.warning("not settling or committing on the way down (%r): the next start "
                             "replays from the last commit", refusal)
            return
        timeout = getattr(self.app, "stop_timeout", None)
        settle = getattr(self.app, "settle_held", None)
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.should_stop and self._unacked_messages:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                self.log.warning(
                    "stop timeout (%.1f s): %d messages still unacknowledged are not committed; "
                    "their next owner replays them", timeout, len(self._unacked_messages),
                )
                break
            if settle is not None:
                try:
                    await asyncio.wait_for(asyncio.shield(asyncio.ensure_future(settle())), left)
                except TimeoutError:
                    continue
            gc.collect()  # messages dropped from cleared buffers leave the weak set
            self._clean_unacked_messages()
            await self.commit()
            if not self._unacked_messages:
                break
            await self._wait_for_ack(timeout=1.0)  # woken by any ack, else after 1 s
            self._clean_unacked_messages()
        await self.commit_and_end_transactions()

    def _commit_refusal(self) -> BaseException | None:
        refusal = getattr(self.app, "commit_refusal", None)
        return refusal() if refusal is not None else None

    async def _commit(self, offsets: Any) -> bool:
        """Commit, unless a send failed or the app crashed. Runs after Faust's commit path has
        flushed the producer (``Consumer._commit_offsets``), so every send made for the acked
        records has settled and a failed one is seen here (``streams.delivery``)."""
        refusal = self._commit_refusal()
        if refusal is not None:
            self.log.error("not committing %d offsets: %r", len(offsets), refusal)
            return False
        return await super()._commit(offsets)


    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:  # Faust drops their acks and gaps too
            self._batches.pop(tp, None)
            self._yielded.pop(tp, None)
            self._holes.pop(tp, None)
        await super().on_partitions_revoked(revoked)


class BatchTransport(faust_aiokafka.Transport):
    """The aiokafka transport with :class:`BatchConsumer`."""

    Consumer = BatchConsumer


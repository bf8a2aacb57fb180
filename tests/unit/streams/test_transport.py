"""Offset bookkeeping of batch delivery: an acked batch commits every offset it covers.

A batch message stands for a range of records; Faust records only its last offset when it is
acked. These tests drive the consumer's own bookkeeping (the code Faust's commit calls) with the
sequences a real consumer sees: consecutive polls, a gap before a batch (compacted or deleted
records), and the same records fetched twice with other batch boundaries (a re-read after a
seek), which used to stop a partition's commits for good. Acks go through ``Message.ack``;
Faust's accelerated stream path inlines the same bookkeeping (``message.acked`` and the acked
offset) without calling ``Consumer.ack``, which is why ranges are resolved at commit time, not in
an ack hook (the clean-stop integration test runs that path).
"""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import faust
import pytest
from faust.types import TP
from mode.utils.queues import FlowControlQueue

from streams.transport import BatchTransport

TOPIC = "in"
TP0 = TP(TOPIC, 0)


def _rec(offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic=TOPIC, partition=0, offset=offset, timestamp=0,
                           timestamp_type=0, serialized_value_size=1)


@pytest.fixture
def consumer():
    loop = asyncio.new_event_loop()
    app = faust.App("transport-test", broker="kafka://127.0.0.1:1", loop=loop)
    app.batched_topics = frozenset({TOPIC})
    app.topics._acking_topics.add(TOPIC)
    transport = BatchTransport(url=["kafka://127.0.0.1:1"], app=app, loop=loop)
    c = transport.create_consumer(callback=lambda message: None,
                                  on_partitions_revoked=None, on_partitions_assigned=None)
    c._committed_offset[TP0] = 100
    yield c, loop
    loop.close()


def _deliver(consumer, loop, first: int, last: int, read_offset: int | None):
    """What getmany + _drain_messages do for one batch: build the message, then report the
    offset jump since the previous batch's last record as a gap."""
    c = consumer
    message = c._batch_message(TP0, [_rec(o) for o in range(first, last + 1)], 0)
    c.track_message(message)
    if read_offset is not None and last - read_offset > 1:
        loop.run_until_complete(c._add_gap(TP0, read_offset + 1, last))
    return message


def _commit(c) -> int | None:
    offset = c._new_offset(TP0)
    if offset is not None:
        c._committed_offset[TP0] = offset
    return offset


def test_consecutive_batches_commit_to_the_end(consumer) -> None:
    c, loop = consumer
    m1 = _deliver(c, loop, 100, 149, None)
    m2 = _deliver(c, loop, 150, 199, 149)
    assert _commit(c) is None  # nothing acked yet
    m2.ack(c)
    assert _commit(c) is None  # the first batch is still in flight
    m1.ack(c)
    assert _commit(c) == 200


def test_a_gap_before_a_batch_is_skipped_but_the_batch_is_not(consumer) -> None:
    c, loop = consumer
    m1 = _deliver(c, loop, 100, 149, None)
    m2 = _deliver(c, loop, 160, 199, 149)  # 150..159 compacted away
    m1.ack(c)
    assert _commit(c) == 150
    assert _commit(c) is None  # the second batch is not acked yet
    m2.ack(c)
    assert _commit(c) == 200


def test_records_fetched_twice_with_other_boundaries_still_commit(consumer) -> None:
    """The defect: batches were remembered by their last offset; a second fetch of the same
    records ending at the same offset overwrote the first one's range, and the partition never
    committed past it again."""
    c, loop = consumer
    m1 = _deliver(c, loop, 100, 149, None)
    m1.ack(c)
    assert _commit(c) == 150
    m2 = _deliver(c, loop, 150, 199, 149)
    m2b = _deliver(c, loop, 170, 199, 199)  # fetched again with other boundaries
    m2.ack(c)
    m2b.ack(c)
    assert _commit(c) == 200
    m3 = _deliver(c, loop, 200, 249, 199)
    m3.ack(c)
    assert _commit(c) == 250


def test_ranges_below_the_committed_offset_are_not_acked_again(consumer) -> None:
    c, loop = consumer
    c._committed_offset[TP0] = 120
    m1 = _deliver(c, loop, 100, 149, None)  # a re-read that starts before the commit
    m1.ack(c)
    assert _commit(c) == 150
    assert not c._acked[TP0]


def _drain(consumer, loop) -> list:
    async def run() -> list:
        return [m async for m in consumer.getmany(timeout=0.1)]
    return loop.run_until_complete(run())


def test_records_dropped_while_flow_is_stopped_are_fetched_again(consumer, monkeypatch) -> None:
    """A fetch that returns while flow is stopped (a rebalance began) is dropped; its partitions
    are seeked back to the first dropped record. Stock Faust only seeks to committed offsets,
    which a changelog partition does not have: recovery then waited forever for records the
    consumer had already passed."""
    c, loop = consumer
    changelog = TP("app-kpi-state-changelog", 1)
    fetched = {changelog: [_rec(0), _rec(1)], TP0: [_rec(300), _rec(301)]}
    seeks: list[tuple[TP, int]] = []

    async def wait_next_records(timeout: float):
        return fetched, {changelog, TP0}

    async def seek_if_past(tp: TP, last: int, offset: int) -> bool:
        seeks.append((tp, offset))
        return True

    async def perform_seek() -> None:
        seeks.append(("committed", None))

    monkeypatch.setattr(c, "_wait_next_records", wait_next_records)
    monkeypatch.setattr(c, "_seek_if_past", seek_if_past)
    monkeypatch.setattr(c, "perform_seek", perform_seek)
    monkeypatch.setattr(c, "assignment", lambda: {changelog, TP0})
    c.flow_active = False
    assert _drain(c, loop) == []
    assert seeks == [(changelog, 0), (TP0, 300), ("committed", None)]


def test_records_of_a_partition_not_active_are_fetched_again(consumer, monkeypatch) -> None:
    c, loop = consumer
    other = TP(TOPIC, 1)
    fetched = {other: [_rec(7)], TP0: [_rec(100), _rec(101)]}
    seeks: list[tuple[TP, int]] = []

    async def wait_next_records(timeout: float):
        return fetched, {TP0}

    async def seek_if_past(tp: TP, last: int, offset: int) -> bool:
        seeks.append((tp, offset))
        return True

    monkeypatch.setattr(c, "_wait_next_records", wait_next_records)
    monkeypatch.setattr(c, "_seek_if_past", seek_if_past)
    monkeypatch.setattr(c, "assignment", lambda: {other, TP0})
    c.flow_active = True
    monkeypatch.setattr(c, "highwater", lambda tp: 102)
    delivered = _drain(c, loop)
    assert [(tp, m.first_offset, m.offset) for tp, m in delivered] == [(TP0, 100, 101)]
    assert seeks == [(other, 7)]


def _reread_setup(consumer, monkeypatch):
    c, loop = consumer
    seeks: list[tuple[TP, int]] = []

    async def seek(tp: TP, offset: int) -> None:
        seeks.append((tp, offset))

    async def wait_next_records(timeout: float):
        return {}, {TP0}

    monkeypatch.setattr("streams.transport.HOLE_REREAD_SECONDS", 0.0)
    monkeypatch.setattr(c, "_seek", seek)
    monkeypatch.setattr(c, "assignment", lambda: {TP0})
    monkeypatch.setattr(c, "_wait_next_records", wait_next_records)
    c.flow_active = True
    return c, loop, seeks


def test_a_commit_held_by_a_message_no_one_will_ack_is_re_read(consumer, monkeypatch) -> None:
    """Faust's stream skips a message of a stale generation without acking it; later batches
    are acked and the partition could never commit again. It is re-read from the held offset."""
    c, loop, seeks = _reread_setup(consumer, monkeypatch)
    _deliver(c, loop, 100, 149, None)  # generation 0
    c.app.consumer_generation_id = 1  # ... taken by the stream after the generation moved: skipped
    m2 = _deliver(c, loop, 150, 199, 149)
    m2.ack(c)
    assert _commit(c) is None
    _drain(c, loop)
    assert seeks == [(TP0, 100)]
    assert c._read_offset[TP0] is None  # the drain loop must take the re-read records
    assert c.holes_reread == 1
    m1b = _deliver(c, loop, 100, 160, None)  # the re-read
    m1b.ack(c)
    assert _commit(c) == 200


def test_a_skipped_last_batch_of_an_older_generation_is_re_read(consumer, monkeypatch) -> None:
    """The same skip, of the partition's last batch: nothing later is acked, so no ack shows the
    hole. It used to wait for the partition's next record; it is re-read from the held offset."""
    c, loop, seeks = _reread_setup(consumer, monkeypatch)
    _deliver(c, loop, 100, 149, None)  # generation 0
    c.app.consumer_generation_id = 1  # skipped by the stream; no record comes after it
    assert _commit(c) is None
    _drain(c, loop)
    assert seeks == [(TP0, 100)]
    assert c.holes_reread == 1
    m1b = _deliver(c, loop, 100, 149, None)  # the re-read, this generation
    m1b.generation_id = 1
    m1b.ack(c)
    assert _commit(c) == 150


def test_a_last_batch_in_flight_is_left_alone(consumer, monkeypatch) -> None:
    """The last batch of the current generation, not acked yet, is in flight: no hole."""
    c, loop, seeks = _reread_setup(consumer, monkeypatch)
    _deliver(c, loop, 100, 149, None)  # generation 0, the current one, in flight
    assert _commit(c) is None
    _drain(c, loop)
    assert seeks == [] and c.holes_reread == 0


def test_a_commit_held_by_a_message_in_flight_is_left_alone(consumer, monkeypatch) -> None:
    c, loop, seeks = _reread_setup(consumer, monkeypatch)
    _deliver(c, loop, 100, 149, None)  # in flight, this generation
    m2 = _deliver(c, loop, 150, 199, 149)
    m2.ack(c)
    assert _commit(c) is None
    _drain(c, loop)
    assert seeks == [] and c.holes_reread == 0


def test_a_cut_message_commits_only_what_was_applied(consumer) -> None:
    """The aggregate stage applied a batch only up to a delivery gap (``streams.aggregate.Gap``):
    acking it must not commit the records after the gap, which were not applied."""
    c, loop = consumer
    m1 = _deliver(c, loop, 100, 149, None)
    m2 = _deliver(c, loop, 150, 199, 149)
    c.cut(m2, 169)
    assert (m2.offset, m2.value[-1].offset) == (169, 169)
    m1.ack(c)
    m2.ack(c)
    assert _commit(c) == 170


def test_a_message_that_applied_nothing_is_forgotten_unacked(consumer) -> None:
    c, loop = consumer
    m1 = _deliver(c, loop, 100, 149, None)
    m2 = _deliver(c, loop, 151, 199, 149)  # 150 never delivered
    c.cut(m2, None)
    assert m2.acked and m2 not in c._unacked_messages
    m1.ack(c)
    assert _commit(c) == 150  # not past the record that was never applied
    assert _commit(c) is None
    m3 = _deliver(c, loop, 150, 199, 149)  # read again
    m3.ack(c)
    assert _commit(c) == 200


class _Partition:
    """What the consumer thread's aiokafka consumer does with one partition's fetch position:
    a fetch hands out the records from the position on and moves it past them; a seek sets it."""

    def __init__(self, end: int, position: int) -> None:
        self.end = end
        self.position = position

    async def fetch(self, timeout: float):
        records = [_rec(o) for o in range(self.position, self.end)]
        self.position = self.end
        return ({TP0: records} if records else {}), {TP0}

    async def seek(self, tp: TP, offset: int) -> None:
        self.position = offset

    async def seek_if_past(self, tp: TP, last: int, offset: int) -> bool:
        if self.position <= last:
            return False
        self.position = offset
        return True


def _recovery_setup(consumer, monkeypatch, partition: _Partition, during_seek):
    """Faust's recovery end (``Recovery.on_recovery_completed``): the stream partitions are
    resumed, seeked to their committed offsets (here 100) while the fetcher runs, then flow
    control is resumed, which clears the agents' queues, then the consumer's flow."""
    c, loop = consumer
    queue = FlowControlQueue(flow_control=c.app.flow_control, clear_on_resume=True)

    async def seek_to_committed():
        await during_seek()
        return {TP0: 100}

    async def deliver() -> None:  # the drain loop: delivered messages go to the agent's queue
        async for _, message in c.getmany(timeout=0.1):
            queue.put_nowait(message)

    monkeypatch.setattr(c, "_wait_next_records", partition.fetch)
    monkeypatch.setattr(c, "_seek", partition.seek)
    monkeypatch.setattr(c, "_seek_if_past", partition.seek_if_past, raising=False)  # (new)
    monkeypatch.setattr(c, "seek_to_committed", seek_to_committed)
    monkeypatch.setattr(c, "assignment", lambda: {TP0})
    monkeypatch.setattr(c, "highwater", lambda tp: partition.end)
    c.flow_active = True
    return c, loop, queue, deliver


def _recover(c, loop, deliver) -> None:
    loop.run_until_complete(c.perform_seek())
    c.app.flow_control.resume()  # clears the queues
    c.resume_flow()
    loop.run_until_complete(deliver())


def test_records_fetched_while_seeking_to_committed_offsets_reach_the_agent(consumer, monkeypatch) -> None:
    """The defect (a partition stuck with lag until a restart): a fetch from the committed
    offset landed while the seek completed, before flow control was resumed; its batch went to
    the agent's queue and the resume cleared it, with the read offset and the fetch position
    past it. Nothing re-read it: no later record showed the gap when it was the partition's
    last batch (faust-streaming issue 596)."""
    partition = _Partition(end=104, position=100)
    c, loop, queue, deliver = _recovery_setup(consumer, monkeypatch, partition, lambda: deliver())
    _recover(c, loop, deliver)
    assert [(m.first_offset, m.offset) for m in queue._queue] == [(100, 103)]


def test_a_batch_fetched_before_the_seek_does_not_undo_it(consumer, monkeypatch) -> None:
    """Records handed out before the seek to the committed offset are stale: the seek reads
    them again. Held back, they are not rewound to (that would skip 100..109)."""
    partition = _Partition(end=112, position=110)
    c, loop = consumer
    stale: list = []

    async def fetch_before(timeout: float):
        if not stale:
            stale.append(await _Partition.fetch(partition, timeout))
            partition.position = 100  # the seek, before the fetched records are handed over
            return stale[0]
        return await partition.fetch(timeout)

    c, loop, queue, deliver = _recovery_setup(consumer, monkeypatch, partition, lambda: deliver())
    monkeypatch.setattr(c, "_wait_next_records", fetch_before)
    _recover(c, loop, deliver)
    assert [(m.first_offset, m.offset) for m in queue._queue] == [(100, 111)]

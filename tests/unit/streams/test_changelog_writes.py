"""State parts go to the changelog straight to the producer, in snapshot order.

Through the table (``Table.send_changelog``) a snapshot's parts queued in Faust's producer
buffer, and beyond a hundred pending the consumer drained it, a hundred sends at a time, before
it delivered the next records to the agents: in a backlog every snapshot (hundreds of parts)
stalled the events ("producer buffer full" in the worker's log at every flush).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from metrics.catalog import Catalog
from metrics.events import Bundle, CallCompleted, Event
from metrics.windows import Calendar
from streams.aggregate import AggregateStage
from streams.app import Service
from streams.settings import Settings
from tests.unit.streams.fakes import delivered

CAT = Catalog()
CAL = Calendar("UTC")
T0 = time.time() - 60  # windows still live by the wall clock at the flush


class Table:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.through_table = 0

    def send_changelog(self, *args: Any, **kw: Any) -> asyncio.Future:
        self.through_table += 1
        return delivered()


def test_a_snapshot_goes_straight_to_the_producer_part_by_part_meta_after_the_parts() -> None:
    sent: list[tuple[int, str, bytes | None]] = []

    async def changelog(partition: int, key: str, value: bytes | None) -> asyncio.Future:
        sent.append((partition, key, value))
        return delivered()

    async def scenario() -> None:
        table = Table()
        stage = AggregateStage(table, CAT, CAL, grace_seconds=300, dedup_horizon_seconds=86400,
                               changelog=changelog)
        events = [Event(i, "src", f"e{i}", T0 + i, CallCompleted(f"rep-{i % 5}", "outbound", "connected",
                                                                team_id="east")) for i in range(20)]
        stage.state_for(3).apply(Bundle("sales.activities", 0, events), 0)
        await stage.flush(force=True)
        assert table.through_table == 0
        keys = [key for _, key, value in sent if value is not None]
        assert {p for p, _, _ in sent} == {3} and all(k.startswith("3/") for k in keys)
        assert keys[-1] == "3/meta" and any(k.startswith("3/w/") for k in keys)
        assert stage.parts_written == len(sent)

    asyncio.run(scenario())


def test_a_part_sent_straight_is_the_record_the_table_would_have_sent() -> None:
    async def scenario() -> None:
        service = Service(Settings(app_id="changelog-test", redis_url=""))
        sent: list[dict[str, Any]] = []

        async def send(topic: str, **kw: Any) -> None:
            sent.append({"topic": topic, **kw})

        service._send = send  # type: ignore[method-assign]
        table = service.table
        topic = table.changelog_topic
        for key, value in (("2/meta", b"\x93\x01\x02\x03"), ("2/w/day/0", None)):
            await service._write_changelog(2, key, value)
            serializer = table.value_serializer if value is not None else "raw"
            fut = topic.as_future_message(key=key, value=value, partition=2,
                                          key_serializer=table.key_serializer,
                                          value_serializer=serializer)
            got = sent[-1]
            assert got["topic"] == topic.get_topic_name() == "changelog-test-kpi-state-changelog"
            assert (got["key"], got["value"], got["partition"]) == \
                (fut.message.key, fut.message.value, 2)
            assert not got["headers"] and not fut.message.headers

    asyncio.run(scenario())


def test_partials_of_a_flush_show_the_state_its_snapshot_holds_not_what_was_applied_meanwhile() -> None:
    """The snapshot's writes yield to the loop, where the aggregate agent applies more records
    to the state. The partials a flush publishes (event time: with its snapshot) are captured
    before those writes: captured after them, they carried later versions and a watermark
    ahead of the snapshot, and the roll-up could close a window by event time before another
    source's partial for it came (a CRM replay failed so, once in a full run)."""
    from metrics.partials import DECODER, WATERMARK_KEY
    from streams.publisher import Publisher

    sent: list[tuple[str, bytes, bytes | None]] = []
    stage: AggregateStage

    def bundle(offset: int) -> Bundle:
        return Bundle("sales.activities", 0, [Event(offset * 100 + i, "src", f"e{offset}-{i}", T0 + offset * 10 + i,
                                                    CallCompleted("rep-1", "outbound", "connected", team_id="east"))
                                              for i in range(5)])

    async def changelog(partition: int, key: str, value: bytes | None) -> asyncio.Future:
        if key == f"{partition}/meta":  # the agent runs while the snapshot is being written
            stage.state_for(partition).apply(bundle(1), 1)
        await asyncio.sleep(0)
        return delivered()

    async def send(topic: str, *, key: bytes, value: bytes | None, partition: int | None = None) -> None:
        sent.append((topic, key, value))

    async def scenario() -> None:
        nonlocal stage
        publisher = Publisher(partitions=1, rollup_topic="rollup", interval=0.0, event_time=True)
        stage = AggregateStage(Table(), CAT, CAL, grace_seconds=300, dedup_horizon_seconds=86400,
                               changelog=changelog, publisher=publisher, send=send, event_time=True)
        stage.state_for(0).apply(bundle(0), 0)
        await stage.flush(force=True)

    asyncio.run(scenario())
    partials = [DECODER.decode(value) for _, key, value in sent
                if value is not None and WATERMARK_KEY.encode() not in key]
    assert partials
    assert {p.version for p in partials} == {0}, sorted({p.version for p in partials})


def test_the_watermark_a_flush_announces_is_the_one_its_windows_were_expired_by() -> None:
    """A flush expired every partition's windows first and captured each partition's partials
    (and watermark) later, after the earlier partitions' snapshot writes had yielded to the
    agent: a partition whose watermark moved meanwhile announced it with windows still open
    that it had passed by two grace periods. The roll-up closed them by that watermark, and
    their last partial (sent when the next flush expired them) arrived late: the CRM replay's
    late partials, once in a few runs on a loaded machine."""
    import msgspec

    from metrics.partials import WATERMARK_KEY
    from streams.publisher import Publisher

    grace = 300.0
    sent: list[tuple[bytes, bytes | None]] = []
    stage: AggregateStage

    def bundle(offset: int, t: float) -> Bundle:
        return Bundle("sales.activities", 1, [Event(offset, "src", f"e{offset}", t,
                                                    CallCompleted("rep-1", "outbound", "connected"))])

    async def changelog(partition: int, key: str, value: bytes | None) -> asyncio.Future:
        if key == "0/meta":  # while partition 0's snapshot is written, partition 1 moves on
            stage.state_for(1).apply(bundle(1, T0 + 3600), 1)
        await asyncio.sleep(0)
        return delivered()

    async def send(topic: str, *, key: bytes, value: bytes | None, partition: int | None = None) -> None:
        sent.append((key, value))

    async def scenario() -> None:
        nonlocal stage
        publisher = Publisher(partitions=2, rollup_topic="rollup", interval=0.0, event_time=True)
        stage = AggregateStage(Table(), CAT, CAL, grace_seconds=grace, dedup_horizon_seconds=86400,
                               changelog=changelog, publisher=publisher, send=send, event_time=True)
        stage.state_for(0).apply(Bundle("sales.activities", 0, [Event(0, "src", "z", T0, CallCompleted(
            "rep-0", "outbound", "connected"))]), 0)
        stage.state_for(1).apply(bundle(0, T0), 0)
        await stage.flush(force=True)

    asyncio.run(scenario())
    mark = max(msgspec.msgpack.decode(value, type=float) for key, value in sent
               if key == f"{WATERMARK_KEY}1".encode() and value is not None)
    assert mark == T0 + 3600
    open_windows = [w for w in stage.state_for(1).windows.values() if w.end + 2 * grace <= mark]
    assert not open_windows, [(w.kind, w.start, w.end) for w in open_windows]

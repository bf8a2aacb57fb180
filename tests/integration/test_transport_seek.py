"""``streams.transport.seek_if_past`` on a real aiokafka consumer and broker: the batch consumer
rewinds a partition to records it held back only if no seek moved it since they were handed out
(it reads aiokafka's fetch position, which is not public API: this pins it down)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.transport import seek_if_past
from tests.integration.harness import create_topics, produce, unique

pytestmark = pytest.mark.integration


async def _offsets(consumer: AIOKafkaConsumer, tp: TopicPartition) -> list[int]:
    batch = await consumer.getmany(tp, timeout_ms=5000)
    return [r.offset for r in batch.get(tp, [])]


async def _scenario(bootstrap: str) -> None:
    topic = unique("seek")
    await create_topics(bootstrap, [topic], partitions=1)
    assert await produce(bootstrap, [(topic, None, b"x", None)] * 4) == 4
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        assert await _offsets(consumer, tp) == [0, 1, 2, 3]
        assert seek_if_past(consumer, tp, 3, 0)  # nothing moved it: rewound
        assert await consumer.position(tp) == 0
        assert await _offsets(consumer, tp) == [0, 1, 2, 3]
        consumer.seek(tp, 2)  # a seek after the records were handed out wins
        assert not seek_if_past(consumer, tp, 3, 0)
        assert await consumer.position(tp) == 2
        assert not seek_if_past(consumer, TopicPartition(topic, 1), 0, 0)  # not assigned
    finally:
        await consumer.stop()


def test_a_rewind_never_undoes_a_later_seek(bootstrap: str) -> None:
    asyncio.run(_scenario(bootstrap))

"""A source partition's read position is forgotten when the partition is given away, so one that
comes back later is judged from its committed offset, never from a stale position. (The lead
monitor does not use these positions at all: it judges against the group's committed offsets,
see streams.progress; they feed the consumer-lag gauge.)"""

from __future__ import annotations

import json
from types import SimpleNamespace

from metrics.events import Validator
from streams.ingest import IngestStage
from tests.unit.streams.fakes import delivered

NOW = 1_800_000_000.0


def record(offset: int) -> SimpleNamespace:
    value = json.dumps({
        "specversion": "1.0", "id": f"e-{offset}", "source": "dialer", "type": "tool.used",
        "time": "2027-01-15T08:00:00Z", "data": {"rep_id": "rep-1", "tool": "gong"},
    }).encode()
    return SimpleNamespace(offset=offset, value=value, key=None, headers=[])


async def test_positions_of_partitions_given_away_are_forgotten():
    async def send(topic, *, key, value, partition=None, headers=None):
        return delivered()

    ingest = IngestStage(Validator(), send, keyed_topic="keyed", partitions=4, dlq_topic="dlq",
                         clock=lambda: NOW)
    await ingest.process("in", 0, [record(0), record(1)])
    await ingest.process("in", 1, [record(7)])
    assert ingest.position == {("in", 0): 2, ("in", 1): 8}
    ingest.retain({("in", 1), ("in", 2)})  # the new assignment: in[0] went to another worker
    assert ingest.position == {("in", 1): 8}

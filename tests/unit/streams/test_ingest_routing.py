"""Where the ingest stage forwards each event: the KPI lane by the first route field set (its rep
when it has one, else its team, lead, opportunity or customer; none set, its identity), and a
second copy of a lead lane type naming a lead in the lead lane, by the lead. Routing reads a
plan per data type and remembers partitions of route keys; the partitions must be the ones the
keys hash to, and bad records in between must not shift anything."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace
from zlib import crc32

from metrics.events import BUNDLE_DECODER, LANE_KPI, LANE_LEAD, Validator
from streams.ingest import IngestStage

NOW = 1_800_000_000.0
PARTS = 8


def record(offset: int, etype: str, data: dict) -> SimpleNamespace:
    value = json.dumps({
        "specversion": "1.0", "id": f"e-{offset}", "source": "crm", "type": etype,
        "time": "2027-01-15T08:00:00Z", "data": data,
    }).encode()
    return SimpleNamespace(offset=offset, value=value, key=None, headers=[])


def part(key: str) -> int:
    return crc32(key.encode()) % PARTS


CASES = [  # (type, data, KPI-lane route key, lead-lane key or None)
    ("call.completed", {"rep_id": "rep-1", "team_id": "t-1", "lead_id": "lead-1",
                        "direction": "outbound", "outcome": "connected"}, "rep-1", "lead-1"),
    ("email.sent", {"rep_id": "rep-2", "lead_id": "lead-2"}, "rep-2", "lead-2"),
    ("tool.used", {"rep_id": "rep-3", "tool": "gong"}, "rep-3", None),
    ("lead.created", {"lead_id": "lead-3", "team_id": "t-9"}, "t-9", "lead-3"),
    ("lead.created", {"lead_id": "lead-4"}, "lead-4", "lead-4"),
    ("lead.qualified", {"lead_id": "lead-5", "stage": "sql"}, "lead-5", None),  # not lead lane
    ("opportunity.stage_changed", {"opportunity_id": "opp-1", "to_stage": "won"}, "opp-1", None),
    ("nps.responded", {"score": 9, "customer_id": "c-1"}, "c-1", None),
    ("nps.responded", {"score": 9}, "crm\x00e-{offset}", None),  # no route field: identity
    ("spend.recorded", {"amount": 5, "category": "sales", "team_id": "t-2"}, "t-2", None),
    ("conversation.held", {"rep_id": "rep-1", "team_id": "t-1"}, "rep-1", None),  # no lead
]


async def test_each_event_goes_to_the_partitions_its_keys_hash_to():
    sent: list[tuple[int, bytes]] = []

    async def send(topic, *, key, value, partition=None, headers=None):
        sent.append((partition, value) if topic == "keyed" else (-1, value))

    ingest = IngestStage(Validator(), send, keyed_topic="keyed", partitions=PARTS, dlq_topic="dlq",
                         clock=lambda: NOW)
    records = []
    for i, (etype, data, _, _) in enumerate(CASES * 2):  # twice: remembered partitions too
        records.append(record(2 * i, etype, data))
        records.append(SimpleNamespace(offset=2 * i + 1, value=b"{", key=None, headers=[]))
    await ingest.process("in", 0, records)
    expected: dict[tuple[int, int], list[int]] = {}
    for i, (_, _, key, lead) in enumerate(CASES * 2):
        offset = 2 * i
        expected.setdefault((part(key.format(offset=offset)), LANE_KPI), []).append(offset)
        if lead is not None:
            expected.setdefault((part(lead), LANE_LEAD), []).append(offset)
    got: dict[tuple[int, int], list[int]] = {}
    for partition, value in sent:
        if partition < 0:
            continue
        bundle = BUNDLE_DECODER.decode(value)
        got.setdefault((partition, bundle.lane), []).extend(e.offset for e in bundle.events)
    assert got == expected
    assert sum(1 for p, _ in sent if p < 0) == len(CASES) * 2  # every bad record dead-lettered
    assert ingest.rejected["invalid_json"] == len(CASES) * 2
    await asyncio.sleep(0)

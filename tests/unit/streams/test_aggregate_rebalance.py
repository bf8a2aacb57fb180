"""The aggregate stage across a rebalance: kept partitions keep their state, others are rebuilt.

The table is a plain dict standing for what Faust's recovery put in the memory store: for a kept
partition only the parts written since the previous recovery, for a new one its whole changelog.
"""

from __future__ import annotations

import asyncio

import pytest

from metrics.catalog import Catalog
from metrics.state import PartitionState, part_stamp
from metrics.windows import Calendar
from streams.aggregate import AggregateStage, StaleState
from tests.unit.streams.fakes import delivered

CAT = Catalog()
CAL = Calendar("UTC")


class Table:
    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.sent: list[tuple[int, str, bytes | None]] = []

    def send_changelog(self, partition: int, key: str, value: bytes | None, **kw: object) -> asyncio.Future:
        self.sent.append((partition, key, value))
        return delivered()


def _stage() -> tuple[AggregateStage, Table]:
    table = Table()
    return AggregateStage(table, CAT, CAL, grace_seconds=300, dedup_horizon_seconds=86400), table


def _parts(applied: int) -> list[tuple[str, bytes]]:
    """The snapshot of a partition state that applied up to ``applied``."""
    state = PartitionState(CAT, CAL)
    state.applied = applied
    return [(k, v) for k, v in state.snapshot() if v is not None]


def _load(table: Table, partition: int, parts: list[tuple[str, bytes]]) -> None:
    for key, raw in parts:
        table.data[f"{partition}/{key}"] = raw


def test_part_stamp_reads_the_offset_of_any_part():
    (key, raw), = _parts(41)
    assert key == "meta" and part_stamp(raw) == 41


def test_kept_partition_keeps_its_state_and_drops_the_reread_bytes():
    stage, table = _stage()
    for p in (0, 1):
        _load(table, p, _parts(10 + p))
    stage.recovered([0, 1], [0, 1])
    kept = stage.states[0]
    assert kept.applied == 10 and not table.data  # the bytes live once, in the state
    stage.position[0] = 11
    kept.applied = 20  # applied and flushed more since: its parts are re-read on recovery
    _load(table, 0, _parts(20))
    stage.revoke([0, 1])
    stage.assign([0])
    assert set(stage.states) == {0} and 1 not in stage.position
    stage.recovered([0], [0])
    assert stage.states[0] is kept and kept.applied == 20 and stage.position[0] == 11
    assert not table.data


def test_partition_back_after_leaving_is_rebuilt_from_its_whole_changelog():
    stage, table = _stage()
    _load(table, 2, _parts(5))
    stage.recovered([2], [2])
    stage.revoke([2])
    stage.assign([])  # given away
    assert not stage.states
    _load(table, 2, _parts(30))  # its whole changelog, as its other owner left it
    stage.revoke([])
    stage.assign([2])
    stage.recovered([2], [2])
    assert stage.states[2].applied == 30


def test_recovery_drops_partitions_it_no_longer_owns():
    stage, table = _stage()
    _load(table, 0, _parts(3))
    stage.recovered([0], [0])
    stage.recovered([1], [1])  # an assignment this stage did not see: still never serve partition 0
    assert set(stage.states) == {1}


def test_kept_partition_written_by_another_worker_is_stale():
    stage, table = _stage()
    _load(table, 0, _parts(10))
    stage.recovered([0], [0])
    _load(table, 0, _parts(50))  # newer than anything this worker applied
    with pytest.raises(StaleState):
        stage.recovered([0], [0])


async def test_held_records_are_dropped_and_nothing_is_written_until_the_assignment():
    stage, table = _stage()
    stage.recovered([0], [0])
    stage.held[0] = ["an event of the old generation"]
    stage.revoke([0])
    assert not stage.held
    stage.states[0].applied = 7  # dirty
    await stage.flush(force=True)
    assert not table.sent  # suspended: maybe another worker's partition already
    stage.assign([0])
    await stage.flush(force=True)
    assert [k for _, k, _ in table.sent] == ["0/meta"]


def test_a_partition_whose_changelog_is_not_read_yet_gets_no_empty_state() -> None:
    """Faust calls back after a recovery although a newer rebalance has begun: a partition of
    the newer assignment is owned but its changelog unread. An empty state built then made the
    next recovery find parts newer than it (StaleState): a crash in the group test."""
    stage, _ = _stage()
    stage.recovered([0, 1], [0])
    assert sorted(stage.states) == [0]
    stage.recovered([0, 1], [0, 1])
    assert sorted(stage.states) == [0, 1]

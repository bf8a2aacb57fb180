"""The in-process harness of the two stages (``streams.bench.contenders.hotpath``) runs the
bench's events through a worker's real stage objects: every event is processed once, whatever
the cut into polls and folds, and the stages' state snapshots to parts."""

from __future__ import annotations

from streams.bench.contenders.hotpath import PARTITIONS, polls, run_once
from streams.bench.data import generate


def test_polls_keep_each_partitions_records_in_offset_order():
    batches = polls(generate(3_000, 50, 5), 250)
    assert sum(len(recs) for _, _, recs in batches) == 3_000
    seen: dict[tuple[str, int], int] = {}
    for topic, partition, recs in batches:
        assert 0 <= partition < PARTITIONS and 0 < len(recs) <= 250
        offsets = [r.offset for r in recs]
        assert offsets == list(range(seen.get((topic, partition), 0), offsets[-1] + 1))
        seen[(topic, partition)] = offsets[-1] + 1


async def test_every_event_is_processed_once_through_the_real_stages():
    batches = polls(generate(3_000, 50, 5), 250)
    out = await run_once(batches, folds=3)
    assert out["processed"] == 3_000
    assert out["bundles"] >= len(batches)  # at least one bundle per poll
    assert out["parts"] > 0


async def test_a_run_stops_after_the_stage_asked_for():
    """``--upto``: runs that differ by exactly one stage's work (for instruction counts)."""
    batches = polls(generate(1_000, 20, 4), 250)
    assert await run_once(batches, folds=1, upto="setup") == {}
    assert set(await run_once(batches, folds=1, upto="ingest")) == {"ingest"}
    apply_only = await run_once(batches, folds=1, upto="apply")
    assert apply_only["fold"] == 0.0 and apply_only["apply"] > 0.0
    assert set(await run_once(batches, folds=1, upto="fold")) == {"apply", "fold"}

"""The aggregate stage never applies past a keyed-events record that was not delivered.

The keyed-events topic has contiguous offsets (no transactions, no compaction). A record
delivered while an earlier one never was (seen once in a SIGKILL test under load: Faust's
stream delivered a batch after a one-record gap and committed past it) must not be applied:
the state's applied offset would move past the missing record, and a later delivery of it would
count as already applied, losing it for good.
"""

from __future__ import annotations

from types import SimpleNamespace

from metrics.catalog import Catalog
from metrics.events import BUNDLE_ENCODER, Bundle, CallCompleted, Event
from metrics.windows import Calendar
from streams import aggregate as aggregate_module
from streams.aggregate import AggregateStage, Gap
from tests.unit.streams.test_aggregate_rebalance import Table

T0 = 1_796_000_000.0


def _record(offset: int) -> SimpleNamespace:
    call = CallCompleted(rep_id="r1", direction="outbound", outcome="connected")
    bundle = Bundle("sales.activities", 0, [Event(offset, "dialer", f"call-{offset}", T0 + offset, call)])
    return SimpleNamespace(offset=offset, value=BUNDLE_ENCODER.encode(bundle), topic="keyed")


def _calls(stage: AggregateStage) -> float:
    state = stage.states[0]
    return sum(v for w in state.windows.values() if w.kind == 2 for k, v in w.values.items()
               if k[0] == "calls_made")


def _stage() -> AggregateStage:
    return AggregateStage(Table(), Catalog(), Calendar("UTC"), grace_seconds=300,
                          dedup_horizon_seconds=86400)


def test_a_record_after_a_missing_one_is_not_applied_until_it_is_read_again() -> None:
    stage = _stage()
    stage.apply(0, [_record(o) for o in range(3)])
    assert _calls(stage) == 3 and not stage.gaps
    stage.apply(0, [_record(4), _record(5)])  # 3 was never delivered
    assert stage.gaps.pop(0) == Gap(offset=3, applied=None, seek=True)
    assert stage.states[0].applied == 2 and _calls(stage) == 3
    stage.apply(0, [_record(o) for o in range(3, 6)])  # the re-read
    assert not stage.gaps and stage.states[0].applied == 5
    assert _calls(stage) == 6  # the old code skipped 3 for good: 5


def test_a_batch_is_applied_up_to_its_gap() -> None:
    stage = _stage()
    stage.apply(0, [_record(0), _record(1), _record(3)])
    assert stage.gaps.pop(0) == Gap(offset=2, applied=1, seek=True)
    # messages fetched before the re-read keep arriving: no new re-read while one is under way
    stage.apply(0, [_record(4)])
    assert stage.gaps.pop(0) == Gap(offset=2, applied=None, seek=False)
    stage.apply(0, [_record(o) for o in range(2, 5)])
    assert _calls(stage) == 5


def test_records_that_no_longer_exist_are_skipped_after_the_re_reads(monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(aggregate_module.time, "monotonic", lambda: clock[0])
    stage = _stage()
    stage.apply(0, [_record(0)])
    for attempt in range(aggregate_module.GAP_REREADS):
        clock[0] += aggregate_module.GAP_RETRY_SECONDS
        stage.apply(0, [_record(7)])  # 1..6 deleted by retention: the re-read starts at 7
        assert stage.gaps.pop(0).seek, attempt
    clock[0] += aggregate_module.GAP_RETRY_SECONDS
    stage.apply(0, [_record(7)])
    assert not stage.gaps and stage.gaps_skipped == 1 and _calls(stage) == 2
    assert stage.gap_rereads == aggregate_module.GAP_REREADS

"""The service's own families on /metrics (streams.exposition)."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from streams.exposition import HealthCollector, RoundsCollector
from streams.pacing import FACTOR, LIVE_FACTOR, Pacing, Rounds


def _aggregate() -> SimpleNamespace:
    return SimpleNamespace(
        processed={"call.completed": 5}, duplicates=1, late=0, offset_resets=0, leads_expired=0,
        flushes=2, parts_written=3, state_keys=lambda: 9, label_overflow={}, gap_rereads=0,
        gaps_skipped=0,
    )


def test_offset_rereads_are_counted_on_metrics() -> None:
    registry = CollectorRegistry()
    rereads = [0]
    registry.register(HealthCollector(
        SimpleNamespace(rejected={}), _aggregate(), lambda: [("sales.leads", 0, 4)], 300.0,
        rereads=lambda: rereads[0],
    ))
    assert "salespulse_offset_rereads_total 0.0" in generate_latest(registry).decode()
    rereads[0] = 2
    text = generate_latest(registry).decode()
    assert "salespulse_offset_rereads_total 2.0" in text
    assert 'salespulse_consumer_lag_records{partition="0",topic="sales.leads"} 4.0' in text


def test_delivery_gaps_are_counted_on_metrics() -> None:
    registry = CollectorRegistry()
    aggregate = _aggregate()
    registry.register(HealthCollector(
        SimpleNamespace(rejected={}), aggregate, lambda: [], 300.0, rereads=lambda: 0,
    ))
    aggregate.gap_rereads, aggregate.gaps_skipped = 3, 1
    text = generate_latest(registry).decode()
    assert "salespulse_delivery_gap_rereads_total 3.0" in text
    assert "salespulse_delivery_gaps_skipped_total 1.0" in text


def test_output_rounds_are_counted_with_their_cost_waits_work_and_pace() -> None:
    clock = [0.0]
    settled = Pacing(behind=lambda: False, clock=lambda: clock[0])
    rounds = {"sales_metrics": Rounds(1.0, settled), "redis": Rounds(0.0, settled, live=True)}
    registry = CollectorRegistry()
    registry.register(RoundsCollector(rounds))
    text = generate_latest(registry).decode()
    assert 'salespulse_output_rounds_total{round="redis"} 0.0' in text
    assert "salespulse_output_round_pace_seconds{" not in text  # no round yet: no pace
    rounds["sales_metrics"].done(10.0, 0.3, waited=0.05, work=1_200)
    rounds["sales_metrics"].done(12.0, 0.02, waited=0.0, work=40)
    rounds["redis"].done(11.0, 0.5, work=6_000)
    clock[0] = 100.0  # caught up for longer than SETTLED: live rounds keep the live pace
    text = generate_latest(registry).decode()
    assert 'salespulse_output_rounds_total{round="sales_metrics"} 2.0' in text
    assert 'salespulse_output_round_seconds_total{round="sales_metrics"} 0.32' in text
    assert 'salespulse_output_round_wait_seconds_total{round="sales_metrics"} 0.05' in text
    assert 'salespulse_output_round_units_total{round="sales_metrics"} 1240.0' in text
    # the pace: the interval for a cheap round; a costly live round, LIVE_FACTOR times its cost
    assert 'salespulse_output_round_pace_seconds{round="sales_metrics"} 1.0' in text
    assert f'salespulse_output_round_pace_seconds{{round="redis"}} {LIVE_FACTOR * 0.5}' in text
    assert FACTOR * 0.02 < 1.0 < FACTOR * 0.3

"""The service's own families on /metrics (streams.exposition)."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client import CollectorRegistry, generate_latest

from streams.exposition import HealthCollector


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

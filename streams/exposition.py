"""`GET /metrics`: the service's own health, lead and output-round families (the KPI
families are :mod:`streams.sinks.prometheus`), read from the stages at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector


class HealthCollector(Collector):
    """The service's own counters: processed, duplicates, rejected, late, lag, state writes
    and size."""

    def __init__(self, ingest: Any, aggregate: Any, lag: Callable[[], Iterable[tuple[str, int, int]]],
                 sla_seconds: float, rereads: Callable[[], int] = lambda: 0) -> None:
        self.ingest = ingest
        self.aggregate = aggregate
        self.lag = lag
        self.sla_seconds = sla_seconds
        self.rereads = rereads

    def collect(self) -> Iterator[Metric]:
        agg = self.aggregate
        processed = CounterMetricFamily(
            "salespulse_events_processed", "Good events applied (duplicates not included).", labels=["type"]
        )
        for etype, n in sorted(agg.processed.items()):
            processed.add_metric([etype], n)
        yield processed
        yield CounterMetricFamily(
            "salespulse_events_duplicate", "Events recognised as duplicates (same source and id).",
            value=agg.duplicates,
        )
        rejected = CounterMetricFamily(
            "salespulse_events_rejected", "Records sent to the dead-letter topic, by reason.", labels=["reason"]
        )
        for reason, n in sorted(self.ingest.rejected.items()):
            rejected.add_metric([reason], n)
        yield rejected
        yield CounterMetricFamily(
            "salespulse_events_late",
            "Events that arrived after the grace period of at least one of their windows.",
            value=agg.late,
        )
        lag = GaugeMetricFamily(
            "salespulse_consumer_lag_records", "Records behind the end of each owned partition.",
            labels=["topic", "partition"],
        )
        for topic, partition, behind in self.lag():
            lag.add_metric([topic, str(partition)], behind)
        yield lag
        yield CounterMetricFamily(
            "salespulse_source_offset_resets",
            "Times an input partition's offsets went backwards (topic recreated, group reset).",
            value=agg.offset_resets,
        )
        yield CounterMetricFamily(
            "salespulse_offset_rereads",
            "Times a partition was read again from its committed offset because no record in "
            "flight could ever acknowledge it (re-read records are recognised as applied).",
            value=self.rereads(),
        )
        yield CounterMetricFamily(
            "salespulse_delivery_gap_rereads",
            "Times a keyed-events partition was read again because a record arrived past one "
            "never delivered (nothing is applied past a missing record).",
            value=agg.gap_rereads,
        )
        yield CounterMetricFamily(
            "salespulse_delivery_gaps_skipped",
            "Missing keyed-events records given up on after the re-reads (taken as deleted by "
            "retention): each is logged as an error.",
            value=agg.gaps_skipped,
        )
        yield CounterMetricFamily(
            "salespulse_leads_expired",
            "Leads forgotten while still awaiting a first response, a wait horizon after their "
            "creation (SALESPULSE_LEAD_WAIT_HORIZON_SECONDS).",
            value=agg.leads_expired,
        )
        yield CounterMetricFamily(
            "salespulse_state_flushes", "State snapshots taken.", value=agg.flushes
        )
        yield CounterMetricFamily(
            "salespulse_state_parts_written", "State parts written to the changelog.",
            value=agg.parts_written,
        )
        yield GaugeMetricFamily(
            "salespulse_state_keys",
            "Keys held in state: window sums (kpi, rep, team, dimensions) over live windows "
            "and owned partitions, plus leads.",
            value=agg.state_keys(),
        )
        overflow = CounterMetricFamily(
            "salespulse_label_overflow",
            "Label values counted as \"other\" because their label (rep, team or a dimension) "
            "reached its cap of distinct values in a partition: per event and label.",
            labels=["label"],
        )
        for label, n in sorted(agg.label_overflow.items()):
            overflow.add_metric([label], n)
        yield overflow
        yield GaugeMetricFamily(
            "salespulse_lead_sla_seconds", "The configured first-response SLA for new leads.",
            value=self.sla_seconds,
        )


class LeadCollector(Collector):
    """Leads awaiting a first response, overdue leads, the response-time histogram."""

    def __init__(self, monitor: Any) -> None:
        self.monitor = monitor

    def collect(self) -> Iterator[Metric]:
        monitor = self.monitor
        monitor.observe_responses()
        awaiting = GaugeMetricFamily(
            "salespulse_team_leads_awaiting_response",
            "Leads created and not yet touched, lost or converted.", labels=["team"])
        overdue = GaugeMetricFamily(
            "salespulse_team_leads_overdue",
            "Leads awaiting a first response for longer than the SLA, judged with all input read by the group.",
            labels=["team"])
        oldest = GaugeMetricFamily(
            "salespulse_team_lead_oldest_wait_seconds",
            "How long the longest-waiting lead has waited for a first response.", labels=["team"])
        for team, (n_awaiting, n_overdue, wait) in sorted(monitor.gauges().items()):
            awaiting.add_metric([team], n_awaiting)
            overdue.add_metric([team], n_overdue)
            oldest.add_metric([team], wait)
        yield awaiting
        yield overdue
        yield oldest
        hist = HistogramMetricFamily(
            "salespulse_lead_response_seconds",
            "Time from lead creation to its first human touch, each lead counted once when its touch is read; cumulative since start.",
            labels=["team"])
        bounds = [*(str(b) for b in monitor.buckets), "+Inf"]
        for team, counts in sorted(monitor.histogram.items()):
            cumulative, total = [], 0
            for bound, n in zip(bounds, counts, strict=True):
                total += n
                cumulative.append((bound, total))
            hist.add_metric([team], cumulative, sum_value=monitor.histogram_sum[team])
        yield hist
        yield CounterMetricFamily(
            "salespulse_lead_response_corrections",
            "Lead responses changed after they were recorded (an earlier touch read later, a team "
            "assigned after the touch, a loss before the touch): in the windowed p50/p90/avg, not "
            "in the histogram, which keeps each lead's first count.",
            value=monitor.response_corrections)
        yield CounterMetricFamily(
            "salespulse_lead_alerts_sent", "lead.response_sla_breached alerts sent by this worker.",
            value=monitor.alerts_sent)


class RoundsCollector(Collector):
    """The output rounds (:mod:`streams.pacing`): per kind, how many ran, the event loop's time
    they took, the time their sends waited for the producer, the work they read, and how long
    the pace holds the next one back. What an event waits for on its way to ``/metrics``, Redis
    and ``sales.metrics`` is mostly these rounds' spacing; a round that costs much of the loop
    is spaced out (README, Performance)."""

    def __init__(self, rounds: Mapping[str, Any]) -> None:
        self.rounds = rounds  # kind -> streams.pacing.Rounds

    def collect(self) -> Iterator[Metric]:
        count = CounterMetricFamily(
            "salespulse_output_rounds", "Output rounds run, by kind.", labels=["round"])
        seconds = CounterMetricFamily(
            "salespulse_output_round_seconds",
            "Event-loop time the output rounds took, by kind (seconds).", labels=["round"])
        waited = CounterMetricFamily(
            "salespulse_output_round_wait_seconds",
            "Time the output rounds' sends waited for room in the producer, by kind (seconds).",
            labels=["round"])
        units = CounterMetricFamily(
            "salespulse_output_round_units",
            "Work the output rounds read, by kind: state keys (rollup_partials, while whole "
            "windows are read) or windows (sales_metrics, redis).", labels=["round"])
        pace = GaugeMetricFamily(
            "salespulse_output_round_pace_seconds",
            "How long after the last round of a kind the pace lets the next run, at the "
            "earliest: its cost times the pacing factor, or its interval (seconds; a round "
            "also waits for its own timer).", labels=["round"])
        for kind, r in self.rounds.items():
            count.add_metric([kind], r.count)
            seconds.add_metric([kind], r.seconds)
            waited.add_metric([kind], r.waited_seconds)
            units.add_metric([kind], r.units)
            gap = r.pace()
            if gap is not None:
                pace.add_metric([kind], gap)
        yield from (count, seconds, waited, units, pace)

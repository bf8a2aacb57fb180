"""`GET /metrics`: KPI gauges and service health, rendered from state at scrape time.

No client object is touched per event. At each scrape the renderer takes the current window of
every kind (by the wall clock, in the organisation's time zone) from the roll-up stage, which
holds the finished rep, team and organisation values of the scopes this worker owns
(`streams.rollup`), and emits one family per KPI and scope, named ``salespulse_<scope>_<kpi>``
(SPEC section 3). Across the workers of a group each series is exported by exactly one of them;
after a rebalance a worker stops exporting what it gave away.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from metrics.catalog import Catalog
from metrics.windows import WINDOW_KINDS, Calendar

SCOPE_LABELS = {"rep": ("rep", "team"), "team": ("team",), "org": ()}


def _escape(value: str) -> str:
    """A label value in the text exposition format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class KpiRenderer:
    """Windowed KPI families, per scope, rendered straight to the text exposition format.

    A scrape of 1,000 reps has ~150,000 series. Building a client ``Metric`` and ``Sample``
    object per series took seconds on the event loop that also processes events; here each
    series is one f-string, with escaped label fragments cached per id.
    """

    def __init__(
        self,
        catalog: Catalog,
        calendar: Calendar,
        scopes: Any,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.calendar = calendar
        self.scopes = scopes  # the roll-up stage: values(scope, kind, start) of what it owns
        self._stored = frozenset(k.name for k in catalog.stored)
        self.clock = clock
        self._labels: dict[tuple, str] = {}
        self.families: dict[tuple[str, str], str] = {}  # (scope, kpi) -> metric name
        self.windows_of: dict[str, frozenset[str]] = {}
        for kpi in catalog.kpis:
            self.windows_of[kpi.name] = frozenset(catalog.windows_of(kpi.name))
            if kpi.exported:
                for scope in kpi.scopes:
                    self.families[(scope, kpi.name)] = f"salespulse_{scope}_{kpi.name}"
        self._dims = {k.name: catalog.dimensions_of(k.name) for k in catalog.kpis}

    def _fragment(self, names: tuple[str, ...], values: tuple) -> str:
        """'a="x",b="y",' for label names and values, cached."""
        key = (names, values)
        hit = self._labels.get(key)
        if hit is None:
            if len(self._labels) > 200_000:
                self._labels.clear()
            hit = self._labels[key] = "".join(
                f'{n}="{_escape(str(v))}",' for n, v in zip(names, values, strict=True)
            )
        return hit

    def capture(self) -> list[dict[str, tuple[dict, dict]]]:
        """What a render reads: per window kind, each scope's values of the current and the
        previous window, from the roll-up stage. Runs on the event loop; the value dicts are
        the stage's finished ones, replaced and never changed in place, so a render may read
        them in a thread."""
        now = self.clock()
        windows = []
        for kind_index, kind in enumerate(WINDOW_KINDS):
            start, _ = self.calendar.bounds(kind, now)
            prev_start, _ = self.calendar.bounds(kind, start - 1.0)
            windows.append({
                scope: (self.scopes.values(scope, kind_index, start),
                        self.scopes.values(scope, kind_index, prev_start))
                for scope in SCOPE_LABELS
            })
        return windows

    def render(self, captured: list[dict[str, tuple[dict, dict]]] | None = None) -> str:
        """The KPI families as exposition text. Given a :meth:`capture`, it touches no live
        state and may run off the event loop (in a thread)."""
        windows = captured if captured is not None else self.capture()
        lines: dict[tuple[str, str], list[str]] = {fam: [] for fam in self.families}
        fragment = self._fragment
        for kind, scopes in zip(WINDOW_KINDS, windows, strict=True):
            window = f'window="{kind}"'
            for scope, names in SCOPE_LABELS.items():
                width = len(names)
                for key, value in self._scoped(*scopes[scope]).items():
                    kpi = key[0]
                    out = lines.get((scope, kpi))
                    if out is None or kind not in self.windows_of[kpi]:
                        continue
                    ids = key[1 : 1 + width]
                    dims = key[1 + width :]
                    head = fragment(names, ids)
                    tail = "," + fragment(self._dims[kpi], dims)[:-1] if dims else ""
                    out.append(f"{{{head}{window}{tail}}} {value!r}\n")
        parts = []
        for (scope, kpi), body in lines.items():
            name = self.families[(scope, kpi)]
            help_text = self.catalog.by_name[kpi].help.replace("\\", "\\\\").replace("\n", "\\n")
            parts.append(f"# HELP {name} {help_text}\n# TYPE {name} gauge\n")
            parts.extend(name + line for line in body)
        return "".join(parts)


    def _scoped(self, current: dict[tuple, dict], previous: dict[tuple, dict]) -> dict[tuple, float]:
        """{labels: {(kpi, *dims): v}} as {(kpi, *labels, *dims): v}, with the stored KPIs of
        the previous window at 0 where the current window has none yet: a gauge drops to the
        new window's value at the boundary even when no event arrives."""
        out: dict[tuple, float] = {}
        stored = self._stored
        for ids, values in previous.items():
            out.update(((k[0], *ids, *k[1:]), 0.0) for k in values if k[0] in stored)
        for ids, values in current.items():
            out.update(((k[0], *ids, *k[1:]), v) for k, v in values.items())
        return out


class HealthCollector(Collector):
    """The service's own counters: processed, duplicates, rejected, late, lag, state writes
    and size."""

    def __init__(self, ingest: Any, aggregate: Any, lag: Callable[[], Iterable[tuple[str, int, int]]], sla_seconds: float) -> None:
        self.ingest = ingest
        self.aggregate = aggregate
        self.lag = lag
        self.sla_seconds = sla_seconds

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

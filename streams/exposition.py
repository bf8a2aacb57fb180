"""`GET /metrics`: KPI gauges and service health, rendered from state at scrape time.

No client object is touched per event. At each scrape the collector takes the current window
of every kind (by the wall clock, in the organisation's time zone), rolls the partitions' sums
up into rep, team and organisation values (`metrics.rollup`), and emits one family per KPI and
scope, named ``salespulse_<scope>_<kpi>`` (SPEC section 3).

Only the partitions this worker owns are read, so after a rebalance a worker stops exporting
the series of partitions it gave away.
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
from metrics.leads import UNASSIGNED
from metrics.rollup import rollup
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
        partitions: Callable[[], Iterable[Any]],
        scopes: Any = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.catalog = catalog
        self.calendar = calendar
        self.partitions = partitions
        self.scopes = scopes  # the roll-up stage: team and organisation values it owns
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

    def capture(self) -> tuple[float, dict[str, Any], list[tuple]]:
        """Copy what a render reads: the current and previous window of every kind, from every
        owned partition, and the roster. Runs on the event loop (dict copies, in C); the copy is
        consistent because only the loop changes state."""
        states = list(self.partitions())
        now = self.clock()
        roster: dict[str, Any] = {}
        for state in states:
            roster.update(state.roster)
        windows = []
        scopes = self.scopes
        for kind_index, kind in enumerate(WINDOW_KINDS):
            start, _ = self.calendar.bounds(kind, now)
            prev_start, _ = self.calendar.bounds(kind, start - 1.0)
            # Team and org values are the roll-up stage's, finished and never changed in place.
            rolled = {
                scope: (scopes.values(scope, kind_index, start), scopes.values(scope, kind_index, prev_start))
                for scope in ("team", "org")
            } if scopes is not None else {}
            windows.append((
                [dict(s.raw_window_values(kind_index, start)) for s in states],
                [dict(s.raw_window_values(kind_index, prev_start)) for s in states],
                [{k: list(v) for k, v in s.window_samples(kind_index, start).items()} for s in states],
                rolled,
            ))
        return now, roster, windows

    def render(self, captured: tuple[float, dict[str, Any], list[tuple]] | None = None) -> str:
        """The KPI families as exposition text. Given a :meth:`capture`, it touches no live
        state and may run off the event loop (in a thread)."""
        _, roster, windows = captured if captured is not None else self.capture()

        def team_of(rep: str | None) -> str:
            entry = roster.get(rep) if rep is not None else None
            return entry.team if entry is not None and entry.team else UNASSIGNED

        lines: dict[tuple[str, str], list[str]] = {fam: [] for fam in self.families}
        fragment = self._fragment
        for kind, (current, previous, samples, rolled) in zip(WINDOW_KINDS, windows, strict=True):
            values = rollup(self.catalog, current, previous, samples, team_of)
            if self.scopes is not None:  # across workers: from the roll-up stage
                values.team = self._scoped(*rolled["team"])
                values.org = {(k[0], *k[2:]): v for k, v in self._scoped(*rolled["org"]).items()}
            window = f'window="{kind}"'
            for scope, scoped in (("rep", values.rep), ("team", values.team), ("org", values.org)):
                names = SCOPE_LABELS[scope]
                width = len(names)
                for key, value in scoped.items():
                    kpi = key[0]
                    out = lines.get((scope, kpi))
                    if out is None or kind not in self.windows_of[kpi]:
                        continue
                    ids = key[1 : 1 + width]
                    if scope == "rep" and ids[0] is None:
                        continue
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


    def _scoped(self, current: dict[str, dict], previous: dict[str, dict]) -> dict[tuple, float]:
        """{id: {(kpi, *dims): v}} as {(kpi, id, *dims): v}, with the stored KPIs of the
        previous window at 0 where the current window has none yet."""
        out: dict[tuple, float] = {}
        stored = self._stored
        for scope_id, values in previous.items():
            out.update(((k[0], scope_id, *k[1:]), 0.0) for k in values if k[0] in stored)
        for scope_id, values in current.items():
            out.update(((k[0], scope_id, *k[1:]), v) for k, v in values.items())
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
            "Time from lead creation to its first human touch, cumulative since start.",
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
            "salespulse_lead_alerts_sent", "lead.response_sla_breached alerts sent by this worker.",
            value=monitor.alerts_sent)

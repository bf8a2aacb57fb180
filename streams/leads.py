"""Overdue leads and SLA alerts, judged against everything already in the input (SPEC §4).

A lead is overdue, and raises its one ``lead.response_sla_breached`` alert, when its SLA has
passed and no first touch for it has been read although its input has been read up to the end
by the whole group: another worker of the app id may hold the lead's touch unread in its input.
So leads are judged as of moments T0 for which :class:`streams.progress.GroupProgress` has
confirmed that the group has read, and durably applied, every input record that existed at T0.
At T0 the monitor notes the leads of its partitions that are awaiting a response past their SLA
(candidates); when T0 is confirmed, the candidates still awaiting are the verdict: the overdue
gauge shows it and the new ones are paged. A lead whose creation was read after T0 waits for a
later round, because its touch, produced after T0, may still be unread elsewhere. While the
group catches up on a backlog the gauge keeps the last verdict and nobody is paged.

Exactly one alert per lead, across restarts and SIGKILLs: the alerts topic itself is the
ledger. Each worker reads it from the beginning (no consumer group) into the set of alerted
leads before it judges anything, and sends an alert only for a lead not in that set, awaiting
delivery before adding it. A crash after the send leaves the alert in the topic, where the next
start reads it. The alert's id is derived from the lead, so even a consumer that sees the
topic's records twice can tell them apart.

The ledger remembers only what the topic retains. The worker creates the topic with a retention
of the lead wait horizon plus a day (:func:`streams.app.ensure_topics`), and no lead created more
than the wait horizon before the judged moment is ever alerted (its partition may not have aged
it out yet, when that partition's events stopped): so every alert a lead could still be due is
still in the topic, and a restart never pages a lead again because its alert was deleted.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import time
from bisect import bisect_left
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from metrics.leads import LEAD_WAIT_HORIZON_SECONDS, UNASSIGNED, Lead

log = logging.getLogger(__name__)

ALERT_TYPE = "lead.response_sla_breached"
#: Histogram buckets a sales manager reads: 30 s, 1, 2, 5, 10, 30 min, 1, 4 h, 1 day.
RESPONSE_BUCKETS = (30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 14400.0, 86400.0)


def rfc3339(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alert_event(lead_id: str, lead: Lead, waited: float, sla: float, source: str, now: float) -> bytes:
    """The CloudEvent of one breach. Its id is derived from the lead: a re-emission is the same."""
    return json.dumps({
        "specversion": "1.0",
        "id": f"{ALERT_TYPE}:{lead_id}",
        "source": source,
        "type": ALERT_TYPE,
        "time": rfc3339(now),
        "subject": lead_id,
        "datacontenttype": "application/json",
        "data": {
            "lead_id": lead_id,
            "rep_id": lead.owner,
            "team_id": lead.team or UNASSIGNED,
            "created_time": rfc3339(lead.created or now),
            "waited_seconds": round(waited, 3),
            "sla_seconds": sla,
        },
    }).encode()


class AlertLedger:
    """The set of leads already alerted, read from the alerts topic (the source of truth)."""

    def __init__(self, bootstrap: str, topic: str, client_kwargs: dict[str, Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.client_kwargs = client_kwargs or {}
        self.alerted: set[str] = set()
        self.ready = asyncio.Event()

    def add(self, lead_id: str) -> None:
        self.alerted.add(lead_id)

    async def run(self) -> None:
        """Read the topic from the beginning, then follow it. Sets :attr:`ready` at the end."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=None, enable_auto_commit=False,
            auto_offset_reset="earliest", **self.client_kwargs,
        )
        await consumer.start()
        try:
            partitions = await self._partitions(consumer)
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            ends = await consumer.end_offsets(partitions) if partitions else {}
            while True:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for rec in records:
                        if rec.key:
                            self.alerted.add(rec.key.decode())
                if not self.ready.is_set() and await self._at_end(consumer, ends):
                    log.info("alert ledger ready: %d leads already alerted", len(self.alerted))
                    self.ready.set()
        finally:
            await consumer.stop()

    @staticmethod
    async def _at_end(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> bool:
        for tp, end in ends.items():
            if await consumer.position(tp) < end:
                return False
        return True

    async def _partitions(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        for _ in range(60):
            parts = consumer.partitions_for_topic(self.topic)
            if parts:
                return [TopicPartition(self.topic, p) for p in sorted(parts)]
            await consumer._client.force_metadata_update()  # topic created at start-up
            await asyncio.sleep(0.5)
        raise RuntimeError(f"alerts topic {self.topic!r} does not exist")


class LeadMonitor:
    """Overdue gauges, the response-time histogram, and SLA alerts."""

    def __init__(
        self,
        states: Callable[[], Iterable[Any]],
        progress: Any,
        waited: Callable[[str | None, float, float], float],
        send: Callable[..., Any],
        ledger: AlertLedger,
        *,
        sla_seconds: float,
        alerts_topic: str,
        source: str,
        wait_horizon_seconds: float = LEAD_WAIT_HORIZON_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``progress`` has ``async check(mark)`` (:class:`streams.progress.GroupProgress`).
        A lead created ``wait_horizon_seconds`` or more before the judged moment is never
        alerted: the alerts topic (the ledger) keeps alerts only that long plus a margin."""
        self.states = states
        self.progress = progress
        self.waited = waited
        self.send = send
        self.ledger = ledger
        self.sla = sla_seconds
        self.alerts_topic = alerts_topic
        self.source = source
        self.wait_horizon = wait_horizon_seconds
        self.clock = clock
        self.buckets = RESPONSE_BUCKETS
        self.judged_at: float | None = None  # the last T0 the whole group had read all input
        self.verdict: set[str] = set()  # the leads overdue as of judged_at
        self.alerts_sent = 0
        self.histogram: dict[str, list[int]] = defaultdict(lambda: [0] * (len(RESPONSE_BUCKETS) + 1))
        self.histogram_sum: Counter[str] = Counter()
        self.response_corrections = 0
        self._unsettled: dict[str, float] = {}  # lead -> when its response was first seen unsettled
        self._progress_error: str | None = None

    def observe_responses(self) -> None:
        """Note the leads whose response changed: a lead not counted yet waits until the whole
        group has read all input produced before the change was seen (so out-of-order input
        in a backlog has settled: an earlier touch, a loss before the touch); a counted one
        changed afterwards is a correction, counted apart (the histogram keeps each lead once)."""
        now = self.clock()
        for state in self.states():
            for lead_id in state.drain_response_changes():
                lead = state.leads.leads.get(lead_id)
                if lead is not None and lead.counted:
                    self.response_corrections += 1
                else:
                    self._unsettled.setdefault(lead_id, now)

    def count_responses(self, t0: float) -> None:
        """Count in the histogram the responses seen before ``t0``, a moment by which the whole
        group had read all its input (a round of ``progress``): within a few seconds when live."""
        settled = [lead_id for lead_id, seen in self._unsettled.items() if seen <= t0]
        states = list(self.states())
        for lead_id in settled:
            del self._unsettled[lead_id]
            for state in states:
                response = state.count_response(lead_id)
                if response is not None:
                    self.histogram[response.team][bisect_left(RESPONSE_BUCKETS, response.seconds)] += 1
                    self.histogram_sum[response.team] += response.seconds
                    break

    def candidates(self, at: float) -> dict[str, float]:
        """At a round's T0: the leads awaiting a response past their SLA, with their wait."""
        return {lead_id: waited for lead_id, _, waited in self.overdue(at)}

    async def tick(self) -> None:
        """Judge overdue leads as of the last moment the group had read all its input, and
        alert new breaches."""
        self.observe_responses()
        try:
            done = await self.progress.check(self.candidates)
        except Exception as exc:  # the broker is away, the coordinator moved: next tick
            if repr(exc) != self._progress_error:
                log.warning("group progress unknown, leads not judged: %r", exc)
            self._progress_error = repr(exc)
            return
        self._progress_error = None
        if done is None:
            return
        t0, candidates = done
        self.count_responses(t0)
        # Judge first, then send: each send awaits, and meanwhile the aggregate agent changes
        # the books (iterating them across the awaits crashed the worker under load).
        overdue = [
            (lead_id, lead, candidates[lead_id])
            for state in self.states()
            for lead_id, lead in state.leads.awaiting()
            if lead_id in candidates
        ]
        self.judged_at = t0
        self.verdict = {lead_id for lead_id, _, _ in overdue}
        if not self.ledger.ready.is_set():
            return
        too_old = t0 - self.wait_horizon  # its alert may be gone from the ledger: never page
        for lead_id, lead, waited in overdue:
            if lead_id in self.ledger.alerted or (lead.created or t0) <= too_old:
                continue
            value = alert_event(lead_id, lead, waited, self.sla, self.source, t0)
            try:
                await (await self.send(self.alerts_topic, key=lead_id.encode(), value=value))
            except Exception as exc:  # e.g. the producer is stopping: try again next round
                log.warning("alert for lead %s not sent yet: %r", lead_id, exc)
                return
            self.ledger.add(lead_id)
            self.alerts_sent += 1
            log.info("lead %s breached its SLA after %.0f s: alert sent", lead_id, waited)

    def overdue(self, at: float) -> Iterable[tuple[str, Lead, float]]:
        for state in self.states():
            for lead_id, lead in state.leads.awaiting():
                waited = self.waited(lead.team, lead.created, at)  # type: ignore[arg-type]
                if waited > self.sla:
                    yield lead_id, lead, waited

    def gauges(self) -> dict[str, tuple[int, int, float]]:
        """Per team: (awaiting, overdue in the last verdict and still awaiting, oldest wait now)."""
        now = self.clock()
        verdict = self.verdict
        out: dict[str, list] = defaultdict(lambda: [0, 0, 0.0])
        for state in self.states():
            for lead_id, lead in state.leads.awaiting():
                team = state.label_of("team", lead.team or UNASSIGNED)  # bounded (metrics.labels)
                row = out[team]
                row[0] += 1
                if lead_id in verdict:
                    row[1] += 1
                row[2] = max(row[2], self.waited(lead.team, lead.created, now))  # type: ignore[arg-type]
        return {team: (a, o, w) for team, (a, o, w) in out.items()}

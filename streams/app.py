"""The Faust app: topics, the changelog-backed state table, the two agents, timers, web views.

    input topics --ingest--> <app_id>-keyed-events --aggregate--> state (memory + changelog)
         |                                                          |
         +--> sales.events.dlq                                      +--> GET /metrics

Both agents receive one message per (partition, poll) (`streams.transport`). Faust keeps the
consumer group, commits, rebalancing and table recovery.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import faust
from aiohttp import web as aiohttp_web
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from faust.exceptions import ConsumerNotStarted, NotReady
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from metrics.business_hours import BusinessCalendar
from metrics.catalog import Catalog, CatalogError
from metrics.events import Validator
from metrics.labels import LabelCaps
from metrics.leads import UNASSIGNED
from metrics.snapshots import SnapshotFormat
from metrics.user_catalog import build_catalog
from metrics.windows import Calendar
from streams import allocator
from streams.aggregate import AggregateStage, StaleState
from streams.api import Api
from streams.delivery import DeliveryGuard
from streams.exposition import HealthCollector, LeadCollector, RoundsCollector
from streams.ingest import IngestStage
from streams.kafka_config import kafka_client_kwargs
from streams.leads import AlertLedger, LeadMonitor
from streams.pacing import LIGHT_EVENTS, SETTLED, Pacing
from streams.progress import GroupProgress, KafkaOffsets
from streams.publisher import Publisher
from streams.readout import Readout
from streams.redis_layout import Layout
from streams.rollup import RollupStage
from streams.settings import Settings
from streams.sinks import redis as redis_sink
from streams.sinks.metrics_topic import MetricsTopicSink
from streams.sinks.prometheus import KpiRenderer, requested_names, write_pieces
from streams.stop_watchdog import (
    STOP_MARGIN_SECONDS,
    TASKS_STOP_SECONDS,
    StopWatchdog,
    describe_tasks,
)
from streams.transport import FETCH_MAX_WAIT_MS, BatchTransport

log = logging.getLogger(__name__)

#: :meth:`Service._backlog_tail`: the end of this backlog has had its one waiting round.
TAIL_DONE = -1

#: The alerts topic keeps its records the lead wait horizon plus this margin: an alert is sent
#: after its lead's creation, and no lead older than the horizon is alerted (streams.leads), so
#: the margin only has to cover the clocks of producers and workers; a day is plenty.
ALERTS_RETENTION_MARGIN_SECONDS = 86400.0
STATE_TABLE = "kpi-state"
#: How often the publication timer asks whether a round of roll-up partials is due.
PUBLISH_TICK_SECONDS = 0.05
#: How often the C allocator gives freed memory back to the system (streams.allocator), when
#: the worker is not in a backlog: a round of output or a scrape frees tens of MB at once,
#: which glibc would otherwise keep.
TRIM_SECONDS = 1.0
#: The largest record the producer sends (its ``max_request_size``) and the ``max.message.bytes``
#: of every topic the worker creates, so that no record the producer accepts is refused by the
#: broker for its size. State parts can be large (one window of a partition's reps); forwarded
#: bundles stay far below it (``streams.ingest.MAX_BUNDLE_BYTES``), and so do the producer's
#: batches (``producer_max_batch_size``, 1 MB, or one larger record).
MAX_RECORD_BYTES = 8 * 1024 * 1024
TOPIC_LIMITS = {"max.message.bytes": str(MAX_RECORD_BYTES)}
#: How long the start waits for topics it created to show in the broker's metadata.
TOPICS_LISTED_TIMEOUT_SECONDS = 15.0
#: How often the consumer refreshes the cluster's metadata (a topic that was missing when the
#: group joined is assigned after it; aiokafka's default is 300,000).
METADATA_MAX_AGE_MS = 30_000


class PassThroughSchema(faust.Schema):
    """Hands the consumer message's key and value to the agent untouched (a record list)."""

    def loads_key(self, app: Any, message: Any, *, loads: Any = None, serializer: Any = None) -> Any:
        return message.key

    def loads_value(self, app: Any, message: Any, *, loads: Any = None, serializer: Any = None) -> Any:
        return message.value


class SalesPulseApp(faust.App):
    """A Faust app whose consumer delivers :attr:`batched_topics` one batch per poll.

    On a stop or a revoke its consumer (``streams.transport.BatchConsumer.wait_empty``) awaits
    :attr:`settle_held` to make held records durable and acked, for up to :attr:`stop_timeout`
    seconds (None: no bound).
    """

    batched_topics: frozenset[str] = frozenset()
    settle_held: Callable[[], Awaitable[None]] | None = None
    stop_timeout: float | None = None
    instance_id: str = ""  # Kafka static group membership (streams.transport)
    delivery: DeliveryGuard | None = None

    def _new_transport(self) -> Any:
        return BatchTransport(self.conf.broker_consumer, self)

    def commit_refusal(self) -> BaseException | None:
        """Why nothing may be committed any more, or None: a send failed (see
        :mod:`streams.delivery`) or the app crashed. Either way the next start replays from the
        last commit, which is exact; committing now could pass records whose effect is lost."""
        failure = self.delivery.check() if self.delivery is not None else None
        if failure is not None:
            return failure
        if self._crashed.is_set():
            return self.crash_reason or RuntimeError("the app crashed")
        return None

    async def on_stop(self) -> None:
        # armed first: whatever below (or a task cancelled after it) hangs, the worker exits
        if self.stop_timeout is not None:
            StopWatchdog(asyncio.get_running_loop(), self.stop_timeout + STOP_MARGIN_SECONDS).arm()
        await super().on_stop()

    async def _stop_futures(self) -> None:
        # mode cancels the app's tasks and then waits for them without a bound: one that
        # outlives its cancel (a library losing the CancelledError, as asyncio.wait_for and
        # asyncio.timeout can on Python 3.11) would hold the worker on the way down for good.
        # Bounded here; what is left is named and abandoned (the loop's close cancels it again).
        futures = set(self._futures)
        for future in futures:
            future.cancel()
        if futures:
            _, pending = await asyncio.wait(futures, timeout=TASKS_STOP_SECONDS)
            if pending:
                log.error("%d task(s) still running %.0f s after their cancel, abandoned:\n%s",
                          len(pending), TASKS_STOP_SECONDS, describe_tasks(pending))
        self._futures.clear()

    def fail(self, exc: BaseException) -> None:
        """A send failed: stop the worker (non-zero exit) without committing again."""
        log.error("a send failed (%r): stopping the worker without committing; the next start "
                  "re-reads the input from the last commit", exc)
        self._fail_task = asyncio.ensure_future(self.crash(exc))


def _credentials(settings: Settings) -> Any:
    """Faust's credentials object for the same security settings every aiokafka client of the
    project uses (:func:`streams.kafka_config.kafka_client_kwargs`, which also validates them)."""
    kw = kafka_client_kwargs(settings)
    protocol = kw["security_protocol"]
    if protocol == "PLAINTEXT":
        return None
    if protocol == "SSL":
        return faust.SSLCredentials(kw["ssl_context"])
    return faust.SASLCredentials(
        username=kw["sasl_plain_username"],
        password=kw["sasl_plain_password"],
        mechanism=kw["sasl_mechanism"],
        ssl_context=kw.get("ssl_context"),
    )


class Service:
    """Everything a worker runs, built from :class:`Settings`."""

    def __init__(self, settings: Settings, catalog: Catalog | None = None) -> None:
        self.settings = settings
        self.catalog = catalog or Catalog()
        self.calendar = Calendar(settings.timezone)
        self.business = BusinessCalendar.from_json(settings.business_hours)
        s = settings
        self.keyed_topic_name = keyed_topic(s)
        self.rollup_topic_name = rollup_topic(s)
        app = self.app = SalesPulseApp(
            s.app_id,
            broker=[f"kafka://{host}" for host in s.kafka_bootstrap.split(",")],
            broker_credentials=_credentials(s),
            store="memory://",
            topic_partitions=s.partitions,
            topic_replication_factor=1,
            consumer_auto_offset_reset="earliest",
            stream_buffer_maxsize=16,
            consumer_max_fetch_size=s.consumer_fetch_bytes,
            producer_max_request_size=MAX_RECORD_BYTES,
            # A bundle (one source poll for one partition) is up to a few hundred KB; with
            # aiokafka's 16 KB default every bundle gets its own batch and each send waits for
            # the previous one to drain: the pipeline then idles on round trips.
            # The broker's max.message.bytes limits a record *batch*: batches stay within the
            # state part bound, which is below the changelog's limit (streams.settings).
            producer_max_batch_size=min(1024 * 1024, s.state_part_bytes),
            # State is durable at every flush; commit what it covers soon after. A commit with
            # nothing new acked costs nothing; one with new acks first flushes the producer.
            broker_commit_interval=0.25,
            producer_linger_ms=2,
            web_port=s.web_port,
            # Faust's assignor checks that an assignment carries this worker's own URL, and a
            # static member given its dead self's assignment back carries that one's: with an
            # instance id the URL is the id's, the same after any restart (not a reachable
            # address: salespulse does not use Faust's router)
            **({"canonical_url": f"http://{s.instance_id}"} if s.instance_id else {}),
            web_bind=s.web_host,
            web_enabled=True,
            # Only /metrics, /healthz and "/" ({"status": "OK"}) unless asked: Faust's router and
            # table pages show keys and partition maps to anyone who can reach the port.
            web_router_enabled=s.web_faust_pages,
            web_tables_enabled=s.web_faust_pages,
            web_graph_enabled=s.web_faust_pages,
            web_stats_enabled=s.web_faust_pages,
            web_in_thread=False,
            table_standby_replicas=0,
            # A group that joins while the broker's metadata does not list its topics yet (a
            # broker just started, under load) is assigned none of their partitions, and notices
            # them only at the next metadata refresh: 5 minutes by default, 30 s here.
            consumer_metadata_max_age_ms=METADATA_MAX_AGE_MS,
            broker_session_timeout=s.session_timeout_seconds,
            broker_heartbeat_interval=max(0.5, s.session_timeout_seconds / 10),
        )
        app.batched_topics = frozenset((*s.input_topic_list, self.keyed_topic_name))
        app.stop_timeout = s.stop_timeout_seconds
        app.instance_id = s.instance_id
        self.delivery = app.delivery = DeliveryGuard(app.fail)
        schema = PassThroughSchema()
        self.input_topic = app.topic(*s.input_topic_list, schema=schema)
        # Topic configs apply when Faust creates the topic; an existing topic is not altered.
        self.keyed_topic = app.topic(
            self.keyed_topic_name, partitions=s.partitions, internal=True, schema=schema,
            config=TOPIC_LIMITS,
        )
        self.dlq_topic = app.topic(s.dlq_topic, partitions=s.partitions, internal=True,
                                   config=TOPIC_LIMITS)
        self.alerts_topic = app.topic(s.alerts_topic, partitions=1, internal=True, config=TOPIC_LIMITS)
        self.table = app.Table(
            STATE_TABLE,
            partitions=s.partitions,
            key_type=str,  # JSON-encoded keys "<partition>/<part>"
            value_type=bytes,  # raw msgpack parts
            extra_topic_configs=TOPIC_LIMITS,
        )
        self.ingest = IngestStage(
            Validator(
                max_bytes=s.max_event_bytes,
                max_future_seconds=s.max_future_seconds,
                currency=s.currency,
            ),
            self._send,
            keyed_topic=self.keyed_topic_name,
            partitions=s.partitions,
            dlq_topic=s.dlq_topic,
        )
        snapshots = SnapshotFormat(self.catalog, self.calendar)
        #: output rounds wait ten times their cost, counting their sends' waits in a backlog
        self.pacing = Pacing(self._behind, backlog_factor=s.backlog_round_factor,
                             backlog_interval=s.metrics_interval_seconds, light=self._light)
        #: when (time.monotonic) the worker last committed after a snapshot made while caught up
        self._committed_at = float("-inf")
        #: the end of a backlog: the flushes begun when a costly round was first held for the
        #: records applied before it, or TAIL_DONE (:meth:`_backlog_tail`)
        self._tail_mark: int | None = None
        self.aggregate = AggregateStage(
            self.table,
            self.catalog,
            self.calendar,
            grace_seconds=s.grace_seconds,
            dedup_horizon_seconds=s.dedup_horizon_seconds,
            waited=self.business.waited,
            lead_wait_horizon_seconds=s.lead_wait_horizon_seconds,
            label_caps=LabelCaps(
                reps=s.max_reps, teams=s.max_teams, dimension_values=s.max_dimension_values,
                per_label=self.catalog.dimension_caps,
            ),
            part_bytes=s.state_part_bytes,
            generation=lambda: app.consumer_generation_id,
            publisher=Publisher(
                partitions=s.partitions, rollup_topic=self.rollup_topic_name,
                interval=s.rollup_interval_seconds, event_time=s.window_clock == "event",
                team_interval=s.rollup_team_interval_seconds,
                behind=lambda: not self.pacing.settled(),
                tail=self._backlog_tail,
                pacing=self.pacing,
            ),
            send=self._send,
            event_time=s.window_clock == "event",
            pacing=self.pacing,
            flush_seconds=s.state_flush_seconds,
            changelog=self._write_changelog,
        )
        self._idle_flush: asyncio.Future[None] | None = None
        self.rollup = RollupStage(
            self.catalog, topic=self.rollup_topic_name, partitions=s.partitions,
            grace_seconds=s.grace_seconds,
            event_time=s.window_clock == "event", sources=s.partitions, send=self._send,
            consumer_factory=lambda: AIOKafkaConsumer(
                bootstrap_servers=s.kafka_bootstrap, group_id=None, enable_auto_commit=False,
                auto_offset_reset="earliest", fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                max_partition_fetch_bytes=s.consumer_fetch_bytes,
                **kafka_client_kwargs(s),
            ),
        )
        self.aggregate.local = self.rollup.local
        # The output seam: every sink reads the roll-up stage's values through it.
        self.readout = Readout(self.rollup, grace_seconds=s.grace_seconds)
        self.ledger = AlertLedger(s.kafka_bootstrap, s.alerts_topic, kafka_client_kwargs(s))
        # Leads are judged as of moments the whole group (every worker of the app id) had read
        # all input: the group's committed offsets, not this worker's positions (SPEC §4).
        self.progress: GroupProgress = GroupProgress(
            KafkaOffsets(s.kafka_bootstrap, s.app_id, kafka_client_kwargs(s)),
            s.input_topic_list,
            self.keyed_topic_name,
            lambda: bool(app.consumer.assignment()),
        )
        self.leads = LeadMonitor(
            lambda: list(self.aggregate.states.values()),
            self.progress,
            self.business.waited,
            self._send,
            self.ledger,
            sla_seconds=s.lead_sla_seconds,
            alerts_topic=s.alerts_topic,
            source=f"salespulse/{s.app_id}",
            wait_horizon_seconds=s.lead_wait_horizon_seconds,
        )
        self.registry = CollectorRegistry(auto_describe=False, support_collectors_without_names=True)
        self.kpis = KpiRenderer(self.catalog, self.calendar, self.readout)
        #: Push sinks (streams.sinks), each started as a task of its own.
        self.sinks: list[Any] = [
            MetricsTopicSink(self.readout.reader("sales.metrics"), snapshots,
                             topic=s.metrics_topic, send=self._send,
                             interval=s.metrics_interval_seconds, pacing=self.pacing),
        ]
        self.redis_layout = Layout(s.app_id)
        self.redis: redis_sink.RedisSink | None = None
        if s.redis_url:
            self.redis = redis_sink.RedisSink(
                self.readout.reader("redis"), self.readout,
                redis_sink.client(s.redis_url, s.redis_timeout_seconds), self.redis_layout,
                snapshots, self.catalog, interval=s.redis_interval_seconds,
                grace_seconds=s.grace_seconds, overdue=self._overdue_leads,
                where=redis_sink.redacted(s.redis_url), pacing=self.pacing,
                board_interval=s.redis_board_interval_seconds,
            )
            self.sinks.append(self.redis)
            self.registry.register(self.redis)
        self.registry.register(
            HealthCollector(self.ingest, self.aggregate, self._lag, s.lead_sla_seconds,
                            rereads=lambda: getattr(self.app.consumer, "holes_reread", 0))
        )
        self.registry.register(LeadCollector(self.leads))
        rounds = {"rollup_partials": self.aggregate.publisher.rounds,
                  "state_snapshot": self.aggregate.rounds,
                  "sales_metrics": self.sinks[0].rounds}
        if self.redis is not None:
            rounds["redis"] = self.redis.rounds
        self.registry.register(RoundsCollector(rounds))
        self.api = Api(
            redis_sink.client(s.redis_url, s.redis_timeout_seconds, max_connections=s.api_max_streams + 32)
            if s.redis_url else None,
            self.redis_layout, self.catalog, self.calendar, partitions=s.partitions,
            waited=self.business.waited, sla_seconds=s.lead_sla_seconds,
            max_streams=s.api_max_streams,
        )
        self._wire()

    def _overdue_leads(self) -> dict[int, dict[str, bytes]]:
        """Per owned aggregate partition, its leads in the last overdue verdict still awaiting
        a response (what the overdue gauge counts), as the Redis sink stores them."""
        verdict = self.leads.verdict
        out = {}
        for partition, state in list(self.aggregate.states.items()):
            waiting = state.leads.waiting
            out[partition] = {
                lead_id: redis_sink.lead_json(lead_id, lead.owner,
                                              state.label_of("team", lead.team or UNASSIGNED),
                                              lead.created)
                for lead_id in verdict if (lead := waiting.get(lead_id)) is not None
            }
        return out

    async def _write_changelog(self, partition: int, table_key: str, value: bytes | None) -> Any:
        """One state part to the table's changelog, serialised as the table does, but sent
        straight to the producer. Through the table, a snapshot's parts (hundreds in a backlog)
        queue in Faust's producer buffer, and beyond a hundred pending the consumer drains it,
        a hundred sends at a time, before it delivers the next records to the agents: every
        snapshot stalled the events. The memory store keeps no persisted offsets, so the
        table's callback on delivery has nothing to do."""
        table = self.table
        topic = table.changelog_topic
        headers = topic.prepare_headers(None)
        key, headers = topic.prepare_key(table_key, table.key_serializer, None, headers)
        serializer = table.value_serializer if value is not None else "raw"
        data, headers = topic.prepare_value(value, serializer, None, headers)
        return await self._send(topic.get_topic_name(), key=key, value=data, partition=partition,
                                headers=headers or None)

    async def _send(self, topic: str, *, key: Any, value: bytes, partition: int | None = None,
                    headers: Any = None) -> Any:
        """Send without awaiting delivery; a failed delivery stops the worker before any
        commit passes it (:mod:`streams.delivery`)."""
        try:
            fut = await self.app.producer.send(topic, key, value, partition, None, headers)
        except NotReady as exc:
            if not self.app.should_stop:
                self.delivery.fail(exc)
                raise
            # Stopping, the producer already gone: a timer or task (a round, an alert) outlived
            # it. The sender stops with the worker instead of crashing it (no commit follows).
            self.delivery.refuse(exc)
            raise asyncio.CancelledError("the worker is stopping") from exc
        except Exception as exc:  # refused before it was queued (too large, producer closed)
            self.delivery.fail(exc)
            raise
        return self.delivery.watch(fut)

    def _position(self, tp: TP) -> int | None:
        """Next offset to process in ``tp``: what the stages processed, else (nothing read yet
        since start) the committed offset the consumer resumed from."""
        if tp.topic == self.keyed_topic_name:
            position = self.aggregate.position.get(tp.partition)
        else:
            position = self.ingest.position.get((tp.topic, tp.partition))
        if position is None:
            position = self.app.consumer._committed_offset.get(tp)
        return position

    def _owned(self) -> list[TP]:
        """The input and keyed-events partitions this worker owns (not changelogs)."""
        topics = self.app.batched_topics
        return sorted(tp for tp in self.app.consumer.assignment() if tp.topic in topics)

    def _lag_events(self, lag: list[tuple[str, int, int]] | None = None) -> float:
        """The worker's lag in events, of the input and of the keyed events (records of which
        are bundles of events: in a backlog the ingest stage is done first, and the aggregate
        works through a few hundred); ``lag``: :meth:`_lag`'s answer, when already read."""
        if lag is None:
            lag = self._lag() or []  # None only with known=True
        keyed, per_record = self.keyed_topic_name, self.aggregate.events_per_record()
        return sum(n * per_record if topic == keyed else n for topic, _, n in lag)

    def _behind(self) -> bool:
        """Whether the worker is in a backlog: its lag in events above ``backlog_events``."""
        return self._lag_events() > self.settings.backlog_events

    def _backlog_tail(self) -> bool:
        """Asked when a costly publication round is due (``Publisher(tail=...)``): whether the
        worker has left a backlog less than :data:`streams.pacing.SETTLED` seconds ago and
        the records it applied before the round was first due here are not durable yet (no
        flush begun since then has completed). The round waits for them: run first, its
        partials went ahead of the backlog's last snapshot in the producer. Behind, the
        backlog's own pacing holds instead; once that flush is done, or no record was held,
        the round runs, and no later one of this backlog's end waits (they read the changes
        since, through the split indexes it built; at 200 events/s right after a backlog every
        round would otherwise wait a snapshot)."""
        pacing, aggregate = self.pacing, self.aggregate
        if pacing.behind() or pacing.clock() - pacing.backlog_at >= SETTLED:
            self._tail_mark = None  # the next end of a backlog is asked afresh
            return False
        if self._tail_mark is None:
            self._tail_mark = aggregate.flushes_begun if aggregate.holding() else TAIL_DONE
        if self._tail_mark != TAIL_DONE and aggregate.flushes <= self._tail_mark:
            return True
        self._tail_mark = TAIL_DONE  # one round waits, the first: later ones are paced as ever
        return False

    def _light(self) -> bool:
        """Whether the worker reads close to its input's end (``streams.pacing.LIGHT_EVENTS``)
        and has made durable and committed what it read up to its last backlog's end. Not
        while its lag is not known (``_lag(known=True)``): a worker that started on a backlog
        was light before its first fetch, and, settled for good, ran the end of that backlog's
        live rounds every 0.1 s at four times their cost instead of every second at ten."""
        if self._committed_at <= self.pacing.backlog_at:
            return False
        lag = self._lag(known=True)
        return lag is not None and self._lag_events(lag) <= LIGHT_EVENTS

    def _caught_up(self) -> bool:
        """Whether every owned input and keyed-events partition is read to its high water (as
        of the last fetch: a stale answer costs one early flush, see :meth:`_flush_idle`); not
        while the lag is not known (``_lag(known=True)``)."""
        lag = self._lag(known=True)
        return lag is not None and all(n == 0 for _, _, n in lag)

    def _flush_idle(self) -> None:
        """The worker has caught up: make what it applied durable and commit it soon, instead
        of after the pacing of the backlog's costly snapshots and the next commit tick (the end
        of a backlog was ~15% of its time, waiting). A snapshot an interval after the last one
        (``AggregateStage.idle_flush_at``), again while records are held and nothing is left
        to read: at most one per state flush interval."""
        if self._idle_flush is not None and not self._idle_flush.done():
            return
        if not self._caught_up():
            return
        app, aggregate = self.app, self.aggregate

        async def settle() -> None:
            try:
                while not app.should_stop:
                    await asyncio.sleep(max(0.0, aggregate.idle_flush_at() - time.monotonic()))
                    began = time.monotonic()
                    await aggregate.flush(idle=True)
                    if not app.should_stop:
                        await app.consumer.commit()
                        self._committed_at = began
                    if not aggregate.holding() or not self._caught_up():
                        return
            except Exception as exc:
                log.exception("state flush failed; stopping the worker")
                await app.crash(exc)

        self._idle_flush = asyncio.ensure_future(settle())

    def _lag(self, known: bool = False) -> list[tuple[str, int, int]] | None:
        """``(topic, partition, records)`` behind the high water, for each owned partition
        whose high water is known. ``known``: None instead while the worker owns nothing or a
        partition's high water is not known yet (no fetch answered for it): then there is
        nothing to say, not a lag of 0."""
        consumer = self.app.consumer
        out = []
        owned = self._owned()
        if known and not owned:
            return None
        for tp in owned:
            highwater = consumer.highwater(tp)
            if highwater is None:
                if known:
                    return None
                continue
            position = self._position(tp) or 0
            out.append((tp.topic, tp.partition, max(0, highwater - position)))
        return out

    def _wire(self) -> None:
        app, ingest, aggregate = self.app, self.ingest, self.aggregate

        # An unexpected error stops the worker instead of restarting the agent: a restarted
        # agent would carry on after the failed batch, and only a restart from the committed
        # offsets keeps every KPI exact. (Bad input is not an error: it is dead-lettered.)
        @app.agent(self.input_topic, name="ingest")
        async def ingest_agent(stream: Any) -> None:
            async for event in stream.events():
                message = event.message
                try:
                    await ingest.process(message.topic, message.partition, event.value)
                except Exception as exc:
                    log.exception("ingest failed; stopping the worker")
                    await app.crash(exc)
                    raise

        @app.agent(self.keyed_topic, name="aggregate")
        async def aggregate_agent(stream: Any) -> None:
            async for event in stream.noack().events():
                partition = event.message.partition
                try:
                    bad = aggregate.apply(partition, event.value)
                    for rec, error in bad:
                        await ingest.dead_letter(rec, error, rec.topic, partition)
                except Exception as exc:
                    log.exception("aggregate failed; stopping the worker")
                    await app.crash(exc)
                    raise
                gap = aggregate.gaps.pop(partition, None)
                if gap is not None:
                    # records before this batch were never delivered: it stands for only what
                    # it applied, and the partition is read again from the first missing one
                    app.consumer.cut(event.message, gap.applied)
                    if gap.seek:
                        await app.consumer.reread(event.message.tp, gap.offset)
                    if gap.applied is None:
                        continue
                aggregate.hold(partition, event)
                self._flush_idle()

        @app.timer(self.settings.state_flush_seconds, name="flush-state")
        async def flush_state() -> None:
            await aggregate.flush()

        @app.timer(TRIM_SECONDS, name="trim-memory")
        async def trim_memory() -> None:
            # Not in a backlog: a trim holds each heap's lock while it walks it (up to ~0.25 s
            # after a burst), and the event loop's allocations wait for it. In a thread, so the
            # loop goes on meanwhile.
            if not self._behind():
                await asyncio.get_running_loop().run_in_executor(None, allocator.trim)

        @app.timer(min(PUBLISH_TICK_SECONDS, self.settings.rollup_interval_seconds), name="publish")
        async def publish_partials() -> None:
            await aggregate.publish()  # paced by the publisher (streams.pacing)

        async def settle_held() -> None:
            # A stop or a revoke: the flush timer may already be stopped, and what the
            # aggregate stage holds must become durable and acked now, not at the next tick.
            await aggregate.flush(force=True)

        app.settle_held = settle_held

        @app.task
        async def follow_alerts() -> None:
            await self.ledger.run()

        @app.task
        async def follow_rollup() -> None:
            await self.rollup.run()

        sink_tasks = [app.task(sink.run) for sink in self.sinks]

        @app.task
        async def judge_leads() -> None:
            try:
                async for _ in app.itertimer(self.settings.lead_check_seconds, name="judge-leads"):
                    if not app.should_stop:
                        await self.leads.tick()
            finally:
                await self.progress.close()

        registry = self.registry
        kpis = self.kpis
        rollup = self.rollup
        redis = self.redis
        keyed_name = self.keyed_topic_name
        input_topics = frozenset(self.settings.input_topic_list)

        for path, handler in self.api.routes():
            app.page(path, name=handler.__name__)(_view(handler))
        app.web.web_app.on_shutdown.append(self.api.close_streams)

        @app.page("/metrics")
        class Metrics(View):
            async def get(self, request: Request) -> Response:
                # Capture on the loop, format in a thread: a render formats only the windows
                # changed since the last one (1,000 reps all changed: ~0.11-0.12 s; none: ~6 ms,
                # docs/benchmark.md), and in a thread it slows event processing, never stops it.
                # ?name[]=<metric> (repeatable) renders only those families, as
                # prometheus_client's own exposition does: a cheap poll of one metric.
                names = requested_names(request.query)
                captured = kpis.capture()
                parts = await asyncio.get_running_loop().run_in_executor(
                    None, kpis.parts, captured, names)
                if names is None:
                    parts.append(generate_latest(registry))
                elif names - kpis.metric_names:
                    # the service's own families, when asked for (its collectors, e.g. the
                    # health counters, are not asked for their samples by a KPI poll)
                    parts.append(generate_latest(registry.restricted_registry(names)))
                # Written in pieces of the cache, never joined into one body: with 1,000 reps
                # the text is ~16 MB, and every copy of it was as much again in the peak RSS.
                response = aiohttp_web.StreamResponse(headers={"Content-Type": CONTENT_TYPE_LATEST})
                response.content_length = sum(map(len, parts))
                await response.prepare(request)
                for piece in write_pieces(parts):
                    await response.write(piece)
                await response.write_eof()
                return response

        @app.page("/healthz")
        class Health(View):
            async def get(self, request: Request) -> Response:
                try:
                    owned = app.consumer.assignment()
                except ConsumerNotStarted:  # the web server answers before the consumer runs
                    owned = set()
                assigned = sorted(tp.partition for tp in owned if tp.topic == keyed_name)
                inputs = sorted([tp.topic, tp.partition] for tp in owned if tp.topic in input_topics)
                return self.json({
                    "ok": True, "assigned": assigned, "inputs": inputs,
                    "partitions": sorted(aggregate.states), "rollup": rollup.owned(),
                    "redis": redis.health() if redis is not None else None,
                })

        @self.table.on_recover
        async def restore_states() -> None:
            # Have the state of every owned partition as soon as its changelog is read, not on
            # its first new record: a restarted worker serves its KPIs with no new input. Kept
            # partitions keep their state in memory (see streams.aggregate).
            owned = [tp.partition for tp in app.consumer.assignment() if tp.topic == keyed_name]
            recovery = app.tables.recovery
            remaining = recovery.active_remaining()
            changelog = self.table.changelog_topic.get_topic_name()
            read = [tp.partition for tp in recovery.active_tps
                    if tp.topic == changelog and tp in remaining and remaining[tp] <= 0]
            try:
                aggregate.recovered(owned, read)
            except StaleState as exc:
                log.critical("%s; stopping the worker: a restart recovers the whole changelog", exc)
                await app.crash(exc)

        @app.on_partitions_revoked.connect
        async def on_revoked(app: Any, revoked: set[TP], **kwargs: Any) -> None:
            aggregate.revoke(tp.partition for tp in revoked if tp.topic == keyed_name)

        @app.on_partitions_assigned.connect
        async def on_assigned(app: Any, assigned: set[TP], **kwargs: Any) -> None:
            mine = {tp.partition for tp in assigned if tp.topic == keyed_name}
            aggregate.assign(mine)
            rollup.assign(mine)  # roll-up partition r goes with keyed-events partition r
            ingest.retain({(tp.topic, tp.partition) for tp in assigned})

        self._agents = (ingest_agent, aggregate_agent, flush_state, trim_memory, publish_partials,
                        follow_alerts, judge_leads, follow_rollup, *sink_tasks)


def _view(handler: Callable[..., Awaitable[Any]]) -> type[View]:
    """A Faust page calling ``handler(request, **path)`` for GET; read-only: every other
    method gets a JSON 405."""
    async def get(view: View, request: Request, **path: str) -> Any:
        return await handler(request, **path)

    async def refuse(view: View, request: Request, **path: str) -> Any:
        return aiohttp_web.json_response({"error": "read-only: GET only"}, status=405,
                                         headers={"Allow": "GET, HEAD"})

    return type(handler.__name__, (View,), {
        "get": get, **{m: refuse for m in ("post", "put", "patch", "delete", "options", "search")},
    })


async def ensure_topics(settings: Settings) -> list[str]:
    """Create the input, dead-letter, alerts, metrics and roll-up topics that do not exist yet.

    Before the worker starts: its consumer subscribes by name, and aiokafka discovers a topic
    created later only at its next metadata refresh (5 minutes), so a fresh installation whose
    producers start after the worker would sit idle until then.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, **kafka_client_kwargs(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = {*settings.input_topic_list, settings.dlq_topic}
        missing = [
            NewTopic(name, num_partitions=settings.partitions, replication_factor=1)
            for name in sorted(wanted - existing)
        ]
        if settings.alerts_topic not in existing:
            # The topic is the alert ledger (streams.leads): it must keep every alert a lead
            # still waiting could be due, whatever the broker's default retention (7 days).
            retention = {"retention.ms": str(alerts_retention_ms(settings)), **TOPIC_LIMITS}
            missing.append(NewTopic(settings.alerts_topic, num_partitions=1, replication_factor=1,
                                    topic_configs=retention))
        else:
            await _check_alerts_retention(admin, settings)
        for topic in missing:
            if topic.name == settings.dlq_topic:
                topic.topic_configs = dict(TOPIC_LIMITS)
        compacted = {"cleanup.policy": "compact", **TOPIC_LIMITS}
        for name in (settings.metrics_topic, rollup_topic(settings), changelog_topic(settings)):
            if name not in existing:
                missing.append(NewTopic(name, num_partitions=settings.partitions,
                                        replication_factor=1, topic_configs=compacted))
        if keyed_topic(settings) not in existing:
            # Faust would declare it itself, but only as the worker starts: a group that joins
            # before the broker's metadata lists it is assigned none of its partitions ("Ignoring
            # missing topic") until the next metadata refresh, 5 minutes later.
            missing.append(NewTopic(keyed_topic(settings), num_partitions=settings.partitions,
                                    replication_factor=1, topic_configs=dict(TOPIC_LIMITS)))
        if not missing:
            return []
        try:
            response = await admin.create_topics(missing)
        except TopicAlreadyExistsError:
            errors = {t.name: TopicAlreadyExistsError.errno for t in missing}
        else:  # aiokafka answers errors per topic, without raising
            errors = {name: code for name, code, *_ in response.topic_errors if code}
        for name, code in sorted(errors.items()):
            if code != TopicAlreadyExistsError.errno:
                log.warning("topic %s not created: error code %d", name, code)
        if errors.get(settings.alerts_topic) == TopicAlreadyExistsError.errno:
            # another worker (or a metadata answer behind the controller) was quicker: the
            # topic may have a retention of someone else's choosing
            await _check_alerts_retention(admin, settings)
        await _until_listed(admin, {t.name for t in missing})
        return [t.name for t in missing if t.name not in errors]
    finally:
        await admin.close()


async def _until_listed(admin: AIOKafkaAdminClient, names: set[str]) -> None:
    """Wait until the broker's metadata lists every topic of ``names`` (a created topic can be
    missing from it for a moment): the worker's group must find them all when it first joins."""
    deadline = time.monotonic() + TOPICS_LISTED_TIMEOUT_SECONDS
    while True:
        absent = names - set(await admin.list_topics())
        if not absent:
            return
        if time.monotonic() > deadline:
            log.warning("topics %s created but not yet in the broker's metadata", sorted(absent))
            return
        await asyncio.sleep(0.1)


def keyed_topic(settings: Settings) -> str:
    """The internal topic of re-keyed event bundles, between the ingest and aggregate stages."""
    return f"{settings.app_id}-keyed-events"


def changelog_topic(settings: Settings) -> str:
    """The state table's changelog (Faust's name for it: ``<app id>-<table>-changelog``)."""
    return f"{settings.app_id}-{STATE_TABLE}-changelog"


def alerts_retention_ms(settings: Settings) -> int:
    """The retention the alerts topic needs to be the alert ledger: the wait horizon + a day."""
    return int((settings.lead_wait_horizon_seconds + ALERTS_RETENTION_MARGIN_SECONDS) * 1000)


def alerts_retention_problem(configs: Mapping[str, str | None], wanted_ms: int) -> str | None:
    """Why an alerts topic with these configs forgets alerts sooner than ``wanted_ms``, or None."""
    if "delete" not in (configs.get("cleanup.policy") or "delete"):
        return None  # compacted only: the latest alert of every lead is kept for good
    problems = []
    retention_ms = int(configs.get("retention.ms") or -1)
    if 0 <= retention_ms < wanted_ms:
        problems.append(f"retention.ms={retention_ms} is shorter than {wanted_ms}")
    retention_bytes = int(configs.get("retention.bytes") or -1)
    if retention_bytes >= 0:
        problems.append(f"retention.bytes={retention_bytes} may delete alerts before that")
    return "; ".join(problems) or None


async def _check_alerts_retention(admin: AIOKafkaAdminClient, settings: Settings) -> None:
    """Warn when the existing alerts topic would forget alerts the ledger still needs."""
    topic = settings.alerts_topic
    wanted = alerts_retention_ms(settings)
    resource = ConfigResource(ConfigResourceType.TOPIC, topic,
                              {"cleanup.policy": None, "retention.ms": None, "retention.bytes": None})
    configs: dict[str, str | None] = {}
    error: Any = None
    for attempt in range(10):  # a topic created a moment ago may not be known to every broker yet
        if attempt:
            await asyncio.sleep(0.5)
        try:
            [response] = await admin.describe_configs([resource])
        except Exception as exc:  # the broker refuses (ACLs): say so, carry on
            error = repr(exc)
            break
        [(code, message, _, _, entries)] = response.resources
        if not code and entries:
            configs = {entry[0]: entry[1] for entry in entries}
            break
        error = f"error code {code} {message or ''}".strip()
    if "retention.ms" not in configs:
        log.warning("could not read the retention of the alerts topic %s (%s): it must keep alerts "
                    "for at least retention.ms=%d", topic, error, wanted)
        return
    problem = alerts_retention_problem(configs, wanted)
    if problem:
        log.warning(
            "alerts topic %s: %s. The topic is the alert ledger: an alert deleted by retention is "
            "forgotten, and a lead still waiting then is paged again after a restart. Set "
            "retention.ms=%d (SALESPULSE_LEAD_WAIT_HORIZON_SECONDS plus a day), e.g. "
            "kafka-configs.sh --alter --entity-type topics --entity-name %s --add-config retention.ms=%d",
            topic, problem, wanted, topic, wanted,
        )


def rollup_topic(settings: Settings) -> str:
    """The internal topic of roll-up partials (compacted; see :mod:`streams.rollup`)."""
    return f"{settings.app_id}-rollup"


def load_catalog_file(settings: Settings) -> Catalog:
    """The built-in catalog plus the user KPIs of ``SALESPULSE_CATALOG_FILE``, if set. Raises
    :class:`CatalogError` with a message naming the file, the line and the entry."""
    if not settings.catalog_file:
        return Catalog()
    try:
        text = Path(settings.catalog_file).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise CatalogError(f"{settings.catalog_file}: cannot be read: {exc}") from None
    return build_catalog(text, settings.catalog_file)


def build_service(settings: Settings | None = None, catalog: Catalog | None = None) -> Service:
    return Service(settings or Settings(), catalog)

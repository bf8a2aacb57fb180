"""Worker configuration, read from the environment (and an optional `.env` file).

Every setting is `SALESPULSE_<NAME>`; the defaults are the ones SPEC section 5 names, so a
worker started with no configuration talks to a local broker and Redis.
"""

from __future__ import annotations

from functools import cached_property
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_INPUT_TOPICS = (
    "sales.activities",
    "sales.leads",
    "sales.deals",
    "sales.feedback",
    "sales.reps",
)


class Settings(BaseSettings):
    """All knobs of a worker. Immutable once built; build one per process."""

    model_config = SettingsConfigDict(
        env_prefix="SALESPULSE_", env_file=".env", extra="ignore", frozen=True
    )

    app_id: str = Field("salespulse", description="Consumer group id and state namespace.")
    kafka_bootstrap: str = "localhost:9092"
    kafka_security_protocol: str = "PLAINTEXT"  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    kafka_sasl_mechanism: str = "PLAIN"  # PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    redis_url: str = Field(
        "redis://localhost:6379/0",
        description="Redis of the serving layer (rediss:// for TLS, user:password@ for auth); "
        "empty: no Redis sink, and the HTTP API answers 503.",
    )
    redis_interval_seconds: float = Field(
        0.1, gt=0, description="At most one Redis write per key (window) per interval: the "
        "step from a value on /metrics to Redis and SSE (at 200 events/s, a probe's p50 from its "
        "send to Redis was 0.27-0.33 s with 0.25 s, 0.14-0.19 s with 0.1 s: docs/benchmark.md, "
        "\"Where an event waits at 200 events/s after a backlog\")."
    )
    redis_board_interval_seconds: float = Field(
        5.0, ge=0, description="At most one leaderboard write per rep and window per interval "
        "(the latest values and update messages go out every SALESPULSE_REDIS_INTERVAL_SECONDS): "
        "leaderboards are most of Redis's work when every rep changes.",
    )
    redis_timeout_seconds: float = Field(
        2.0, gt=0, description="Redis connect and command timeout: how soon an outage is noticed."
    )
    api_max_streams: int = Field(
        100, ge=0, description="Concurrent /api/v1/stream (SSE) clients per worker; more get 503."
    )
    web_port: int = 6066
    web_host: str = "0.0.0.0"
    web_faust_pages: bool = Field(
        False, description="Also serve Faust's own pages (/router, /table, /graph, /stats): off by default."
    )
    timezone: str = "UTC"
    lead_sla_seconds: float = 300.0
    input_topics: str = ",".join(DEFAULT_INPUT_TOPICS)
    dlq_topic: str = "sales.events.dlq"
    metrics_topic: str = "sales.metrics"
    alerts_topic: str = "sales.alerts"
    partitions: int = Field(4, description="Partitions of the internal keyed-events topic.")
    max_event_bytes: int = 65536
    max_future_seconds: float = 300.0
    currency: str = "USD"
    grace_seconds: float = Field(300.0, description="How long a closed window still accepts late events.")
    window_clock: Literal["wall", "event"] = Field(
        "wall",
        description="What closes windows (drops them, publishes their final sales.metrics "
        "records): the wall clock (live input, the default) or event time (replays of "
        "historical data; the grace period then also bounds how far input partitions may run "
        "apart in event time, see README).",
    )
    dedup_horizon_seconds: float = Field(
        86400.0, description="How far behind the watermark (event time) producer duplicates are still recognised."
    )
    state_flush_seconds: float = Field(0.5, description="Interval of state snapshots to the changelog.")
    state_part_bytes: int = Field(
        1024 * 1024, ge=4096, le=8 * 1024 * 1024 - 64 * 1024,
        description="Largest changelog record of state: a state part (a window, the roster, a lead "
        "bucket, remembered ids) encoded larger is written as chunks of this size and reassembled "
        "on restore. At most the changelog topics' max.message.bytes (8 MiB) less 64 KiB.",
    )
    backlog_events: int = Field(
        20_000, ge=0,
        description="Lag in events (input, and keyed events) above which the worker is in a "
        "backlog: its output rounds (roll-up partials, sales.metrics) then count the time their "
        "sends wait for the producer as their cost, to leave the producer to the events "
        "(streams.pacing); caught up, a round is paced by its own time on the loop only.",
    )
    backlog_round_factor: float = Field(
        30.0, ge=1.0,
        description="In a backlog (see backlog_events) an output round (roll-up partials, "
        "sales.metrics, Redis) or a state snapshot that took c seconds of the event loop runs "
        "again no sooner than this many times c later (caught up: 10 times), so that together "
        "they leave the loop to the events: values show less often while the worker catches up.",
    )
    consumer_fetch_bytes: int = Field(
        1024 * 1024, ge=16 * 1024,
        description="Most bytes a fetch returns per partition (the consumer's "
        "max_partition_fetch_bytes; a larger first record batch still comes whole). What a "
        "worker holds fetched and not yet processed is about this times its partitions "
        "(a backlog over ~30 partitions: ~30 MiB of records and their objects). 256 KiB "
        "saved no measurable peak RSS in the benchmark and cost a quarter of the backlog's "
        "throughput (0.27 -> 0.20 of bare, back to back): docs/benchmark.md, Memory.",
    )
    metrics_interval_seconds: float = Field(
        1.0, gt=0, description="At most one sales.metrics record per key per interval."
    )
    rollup_interval_seconds: float = Field(
        0.1, gt=0,
        description="At most one roll-up partial per rep and window per interval (the step "
        "from an applied event to the values on /metrics, Redis and SSE; longer while a round "
        "is costly, see streams/pacing.py).",
    )
    rollup_team_interval_seconds: float = Field(
        0.5, ge=0,
        description="At most one roll-up partial per team (and organisation) and window per "
        "interval: a team has an event in almost every round and its partial is the largest.",
    )
    business_hours: str | None = Field(
        None,
        description="JSON: working days and hours per team for lead response time (see README).",
    )
    lead_wait_horizon_seconds: float = Field(
        30 * 86400.0, gt=0,
        description="A lead still waiting for a first response this long after its creation (event "
        "time, behind its partition's watermark) is forgotten; the alerts topic is created with this "
        "retention plus a day.",
    )
    lead_check_seconds: float = Field(1.0, description="How often overdue leads are judged.")
    session_timeout_seconds: float = Field(
        30.0, description="Kafka consumer session timeout: how soon a dead worker's partitions move."
    )
    instance_id: str = Field(
        "", pattern=r"^[A-Za-z0-9._-]{0,249}$",
        description="Kafka static group membership (the consumer's group.instance.id), unique per "
        "worker of an app id, e.g. a StatefulSet pod's name: a worker restarted with the same id "
        "takes its partitions back at once, without a rebalance, where a new member waits out "
        "the dead one's session timeout. A worker stopped for good then keeps its partitions "
        "until its session times out. Empty: dynamic membership.",
    )
    stop_timeout_seconds: float = Field(
        10.0,
        description="How long a stop (or a rebalance) waits to make held records durable and "
        "commit them; what is still unacknowledged then is replayed by the next owner.",
    )
    max_reps: int = Field(
        20_000, ge=1,
        description="Distinct rep ids per aggregate partition; more are counted as rep \"other\".",
    )
    max_teams: int = Field(
        2_000, ge=1,
        description="Distinct team ids per aggregate partition; more are counted as team \"other\".",
    )
    max_dimension_values: int = Field(
        200, ge=1,
        description="Distinct values of each KPI dimension (tool, reason, source, region, ...) per "
        "aggregate partition; more are counted as \"other\".",
    )
    catalog_file: str | None = Field(
        None, description="A YAML file of user KPIs, added to the built-in catalog (see README).",
    )
    loglevel: str = "INFO"

    @cached_property
    def input_topic_list(self) -> tuple[str, ...]:
        return tuple(t.strip() for t in self.input_topics.split(",") if t.strip())

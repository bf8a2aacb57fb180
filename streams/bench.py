"""`salespulse bench`: throughput against baselines and end-to-end latency, in one run.

Why it is built this way:

* The box is small and shared, so absolute rates swing by ±20 % from one minute to the next
  (shared notes, faust-internals §4). Only ratios measured within one run mean anything, so one
  command produces one data set and runs every contender against it back to back; a repeat of
  the bare consumer at the end shows how much the box drifted meanwhile.
* Every run uses fresh topics (``bench-<runid>.sales.*``) and fresh consumer groups / app ids,
  so no contender starts from someone else's offsets or state.
* Each contender is timed from the first record it processed to the last: Faust start-up and the
  group rebalance take seconds and say nothing about the streaming rate.
* The salespulse worker is a black box here, exactly as deployed (``python -m streams.cli
  worker``, loglevel INFO): everything is read from its /metrics and from the broker. Its
  completion needs the events accounted for *and* the state durable (keyed-events commits at
  the end offsets, checked on the broker, because Faust's own view of committed offsets can be
  wrong: shared notes §3).
* The worker renders /metrics on the event loop that processes events, and a render of 1,000
  reps takes seconds, not tens of milliseconds. So (b), polled every 50 ms as specified, also
  reports the share of its timed interval spent inside scrapes, and (b') times a second fresh
  worker from the broker alone (no scrape while it works).
* The latency probe measures what a dashboard sees: from the send of an event to the first
  observation that includes it, under a steady background load at half the measured rate, so
  that it is the latency of a worker with headroom, not of a saturated one. /metrics is
  observed as in production: a full scrape every ``--scrape-interval`` s (Prometheus scrapes
  every 1-5 s), plus the probe's own poll of ``/metrics?name[]=<its metric>`` every 25 ms (one
  family from the same render cache), which times when the value is visible; Redis and the SSE
  stream are watched too. The workers' Redis is SALESPULSE_REDIS_URL or, when none answers
  there, a ``redis-server`` the bench starts in its run dir.
* The run ends with SPEC section 7's figures, one line each with goal, figure and verdict
  (:func:`spec_rows`); ``--mix lead-heavy`` runs the same on a floor where ~40% of the events
  also travel the lead lane; ``--tracemalloc`` adds (m), a traced worker's largest allocation
  sites after the backlog.

Contenders: (a) bare aiokafka ``getmany`` + ``json.loads`` (the floor any Python consumer pays),
(b)/(b') the salespulse worker, (c) a stock Faust agent that only decodes, (d) the same plus
one windowed-table write per event. (c) and (d) are slow (about 4k/s and 1.5k/s here), so by
default they read only the first ``--stock-events`` of the same records, on their own topics.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import aiohttp
import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition

from streams.bench_contenders.mixes import MIXES, lead_lane_share
from streams.bench_contenders.mixes import floor as mix_floor
from streams.demo.mix import DemoRecord
from streams.kafka_config import kafka_client_kwargs
from streams.redis_layout import Layout
from streams.settings import DEFAULT_INPUT_TOPICS, Settings
from streams.sinks.redis import client as redis_client

REPO_ROOT = Path(__file__).resolve().parent.parent
PARTITIONS = 4  # of every input topic (the brief, and what the shared notes measured)
HEADERS = [("content-type", b"application/cloudevents+json")]

METRICS_POLL = 0.05  # (b): /metrics is scraped every 50 ms from launch
RSS_POLL = 0.1  # RSS of the worker process, every 100 ms
COMMIT_POLL = 0.2  # broker check of committed vs end offsets, once all events are in
PROBE_EVERY = 0.1  # latency: one probe event per 100 ms
PROBE_POLL = 0.025  # latency: /metrics?name[]=<the probe's metric> every 25 ms
SCRAPE_INTERVAL = 1.0  # latency: a full scrape every second, as Prometheus does every 1-5 s
LOAD_WARMUP = 2.0  # latency: seconds of background load before the first probe

STARTUP_TIMEOUT = 180.0  # launch -> first record processed
STALL_TIMEOUT = 60.0  # no progress at all for this long: give up on a contender
COMMIT_TIMEOUT = 60.0  # all events in -> commits at the end offsets
PROBE_DRAIN_TIMEOUT = 15.0  # after the last probe: give up when no probe was newly seen this long
PROBE_DRAIN_CAP = 120.0  # ... and at the latest this long after the last probe was sent
BACKLOG_TIMEOUT = 60.0  # end of the load -> worker has processed all of it

PROBE_REP = "rep-probe"
PROBE_TEAM = "team-probe"
PROBE_METRIC = "salespulse_rep_calls_made"
REDIS_START_TIMEOUT = 10.0
TRACEMALLOC_TIMEOUT = 180.0  # snapshot requested -> written (a traced snapshot of a big heap)

_HEALTH_RE = re.compile(
    rb"^(salespulse_events_(?:processed|duplicate|rejected|late)_total|salespulse_consumer_lag_records"
    rb"|salespulse_state_keys)"
    rb"(?:\{[^}]*\})? (\S+)$",
    re.M,
)
_PROBE_PREFIX = f'{PROBE_METRIC}{{rep="{PROBE_REP}",'.encode()
_PROBE_RE = re.compile(
    rb"^" + re.escape(_PROBE_PREFIX) + rb'[^}]*window="day"[^}]*\} (\S+)$', re.M
)
_LOG_PROBLEM_RE = re.compile(r"\[(WARNING|ERROR|CRITICAL)\]|Traceback \(most recent call last\)")
_NUMBER_RE = re.compile(r"[+-]?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


# ------------------------------------------------------------------------------ results


@dataclass
class Result:
    """One row of the table. ``seconds`` is first record processed -> last record processed."""

    key: str
    label: str
    events: int
    seconds: float | None = None
    ok: bool = False
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float | None:
        if not self.ok or not self.seconds or self.seconds <= 0:
            return None
        return self.events / self.seconds


@dataclass
class Health:
    """The worker's own counters, as one /metrics scrape shows them."""

    processed: int = 0
    duplicate: int = 0
    rejected: int = 0
    late: int = 0
    lag: list[int] = field(default_factory=list)
    #: keys held in state (window sums over live windows and partitions, plus leads)
    state_keys: int = 0

    @property
    def accounted(self) -> int:
        """Events the worker has finished with. Late events are not added: an event late for
        one window is still counted in ``processed`` when another window took it."""
        return self.processed + self.duplicate + self.rejected

    @property
    def caught_up(self) -> bool:
        return bool(self.lag) and not any(self.lag)


def parse_health(body: bytes) -> Health:
    """Pick the health counters out of a scrape without parsing the (large) KPI families.

    The health collector is registered after the KPI collector, so its families come last;
    scanning starts there, which keeps a 50 ms polling loop cheap for the parent.
    """
    health = Health()
    start = max(body.find(b"# HELP salespulse_events_processed"), 0)
    for m in _HEALTH_RE.finditer(body, start):
        name, value = m.group(1), int(float(m.group(2)))
        if name == b"salespulse_events_processed_total":
            health.processed += value
        elif name == b"salespulse_events_duplicate_total":
            health.duplicate += value
        elif name == b"salespulse_events_rejected_total":
            health.rejected += value
        elif name == b"salespulse_events_late_total":
            health.late += value
        elif name == b"salespulse_state_keys":
            health.state_keys += value
        else:
            health.lag.append(value)
    return health


def merge_health(healths: Iterable[Health]) -> Health:
    """The counters of several workers of one app id, as one: each partition is counted by
    the one worker that owns it, so sums are the group's figures."""
    out = Health()
    for h in healths:
        out.processed += h.processed
        out.duplicate += h.duplicate
        out.rejected += h.rejected
        out.late += h.late
        out.state_keys += h.state_keys
        out.lag.extend(h.lag)
    return out


def parse_probe_count(body: bytes) -> int:
    """Day-window ``calls_made`` of the probe rep (0 while the series does not exist)."""
    start = body.find(_PROBE_PREFIX)
    if start < 0:
        return 0
    m = _PROBE_RE.search(body, start)  # `start` is a line start, where ^ matches
    return int(float(m.group(1))) if m else 0


def quantile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank quantile: with a few hundred probes, p99 is an observed value, not an
    interpolation between two."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


# ------------------------------------------------------------------------------ plumbing


@dataclass
class Run:
    """Names and connections shared by every phase of one benchmark run."""

    runid: str
    bootstrap: str
    workdir: Path
    client_kw: dict[str, Any]
    topics: list[str]
    stock_topics: list[str]
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    logs: dict[str, Path] = field(default_factory=dict)
    #: end offsets of the input partitions right after producing: the N records of the run
    #: (the latency phase appends more to the same topics)
    input_ends: dict[TopicPartition, int] = field(default_factory=dict)
    #: the Redis of the run's workers (SALESPULSE_REDIS_URL, or one the bench started); "" none
    redis_url: str = ""

    def name(self, suffix: str) -> str:
        return f"bench-{self.runid}-{suffix}"

    def child_env(self, **extra: str) -> dict[str, str]:
        """Environment of a child: ours plus the repo on the path (children run in the run's
        temp dir, so that Faust's ``<app id>-data`` dirs do not land in the work tree)."""
        env = dict(os.environ)
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + path if path else "")
        env["SALESPULSE_REDIS_URL"] = self.redis_url
        env.update(extra)
        return env

    async def spawn(self, log_name: str, *argv: str, env: dict[str, str],
                    stdout: int | IO[bytes] | None = None) -> asyncio.subprocess.Process:
        """Start a child whose stderr (and stdout, unless piped) goes to a log in the run dir."""
        err_path = self.workdir / f"{log_name}.stderr.log"
        self.logs[log_name] = err_path
        with open(err_path, "wb") as err:
            if stdout is None:
                out_path = self.workdir / f"{log_name}.stdout.log"
                self.logs[f"{log_name} (stdout)"] = out_path
                with open(out_path, "wb") as out:
                    proc = await asyncio.create_subprocess_exec(
                        *argv, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                        stdout=out, stderr=err,
                    )
            else:
                proc = await asyncio.create_subprocess_exec(
                    *argv, cwd=self.workdir, env=env, stdin=subprocess.DEVNULL,
                    stdout=stdout, stderr=err,
                )
        self.procs.append(proc)
        return proc


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def stop_process(proc: asyncio.subprocess.Process, timeout: float = 30.0) -> int | None:
    """SIGTERM (Faust shuts down cleanly on it), then SIGKILL after ``timeout``."""
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    return proc.returncode


async def redis_answers(url: str) -> bool:
    """Whether a Redis answers PING at ``url`` within a second or two."""
    redis = redis_client(url, 2.0)
    try:
        return bool(await redis.ping())
    except Exception:  # noqa: BLE001 - refused, timed out, auth: no Redis for the bench
        return False
    finally:
        with contextlib.suppress(Exception):
            await redis.aclose()


async def ensure_redis(run: Run, url: str) -> dict[str, Any]:
    """The Redis of the run's workers: ``url`` (SALESPULSE_REDIS_URL) if one answers there;
    else a ``redis-server`` of our own (Debian's binary, as deploy/local.sh uses) on a free
    port, its dir in the run dir, no persistence; stopped with the run's other children.
    ``url`` empty: no Redis (the workers run without the Redis sink)."""
    if not url:
        run.redis_url = ""
        return {"url": "", "started": False, "note": "SALESPULSE_REDIS_URL is empty: no Redis"}
    if await redis_answers(url):
        run.redis_url = url
        return {"url": url, "started": False}
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.access(binary, os.X_OK):
        run.redis_url = ""
        return {"url": "", "started": False,
                "note": f"no Redis at {url} and no redis-server to start: Redis not measured"}
    port = free_port()
    data = run.workdir / "redis"
    data.mkdir(exist_ok=True)
    proc = await run.spawn(
        "redis", binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data),
        "--save", "", "--appendonly", "no", "--daemonize", "no", "--logfile", "",
        env=run.child_env(),
    )
    own = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + REDIS_START_TIMEOUT
    while time.monotonic() < deadline and proc.returncode is None:
        if await redis_answers(own):
            run.redis_url = own
            return {"url": own, "started": True, "pid": proc.pid,
                    "note": f"no Redis answered at {url}: started redis-server on port {port}"}
        await asyncio.sleep(0.1)
    await stop_process(proc, 5)
    run.redis_url = ""
    return {"url": "", "started": False,
            "note": f"no Redis at {url}, and the redis-server started did not answer "
                    f"(see {run.logs['redis']}): Redis not measured"}


class RssSampler:
    """Peak resident set size of one process, per phase, sampled every ``RSS_POLL`` s."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.phase = "startup"
        self.peaks: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            try:
                rss = self.process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                return
            if rss > self.peaks.get(self.phase, 0):
                self.peaks[self.phase] = rss
            await asyncio.sleep(RSS_POLL)

    def cpu_seconds(self) -> float | None:
        """The process's CPU time so far (user + system, every thread)."""
        try:
            times = self.process.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return times.user + times.system

    def peak_mb(self, phase: str | None = None) -> float | None:
        value = max(self.peaks.values(), default=0) if phase is None else self.peaks.get(phase, 0)
        return value / 2**20 if value else None


def scan_log(path: Path, limit: int = 12) -> dict[str, Any]:
    """Warnings, errors and tracebacks in a child's log: counts per level, the distinct
    messages (numbers masked, so 'flush took 3.2' and 'flush took 9.8' are one kind) with a
    count and an example each, and the first error lines verbatim."""
    counts: dict[str, int] = {}
    kinds: dict[str, list[Any]] = {}
    errors: list[str] = []
    if path.exists():
        with open(path, errors="replace") as f:
            for line in f:
                m = _LOG_PROBLEM_RE.search(line)
                if not m:
                    continue
                level = m.group(1) or "Traceback"
                counts[level] = counts.get(level, 0) + 1
                text = line.rstrip()
                if level != "Traceback":
                    kind = f"[{level}] " + _NUMBER_RE.sub("#", line[m.end():].strip())[:160]
                    entry = kinds.setdefault(kind, [0, text[:300]])
                    entry[0] += 1
                if level != "WARNING" and len(errors) < limit:
                    errors.append(text[:300])
    messages = [
        {"kind": kind, "count": n, "example": example}
        for kind, (n, example) in sorted(kinds.items(), key=lambda kv: -kv[1][0])
    ]
    return {"path": str(path), "counts": counts, "messages": messages, "errors": errors}


async def scrape(session: aiohttp.ClientSession, url: str) -> bytes | None:
    """One /metrics body, or None while the worker's web server is not up (or hiccups)."""
    try:
        async with session.get(url) as resp:
            if resp.status != 200:
                return None
            return await resp.read()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return None


# ------------------------------------------------------------------------------ data


def generate(n: int, reps: int, teams: int, mix: str = "demo") -> list[DemoRecord]:
    """The run's data set: the floor of ``mix`` in bulk mode (event times spread over the
    recent past, the last one no later than now, so the worker neither rejects nor drops any)."""
    return list(mix_floor(mix, reps, teams, 7).events(n))


def retarget(records: Iterable[DemoRecord], prefix: str) -> Iterable[DemoRecord]:
    """The same records, addressed to this run's topics (``<prefix><demo topic>``)."""
    for rec in records:
        yield DemoRecord(prefix + rec.topic, rec.key, rec.value)


async def produce(bootstrap: str, records: Iterable[DemoRecord], client_kw: dict[str, Any]) -> int:
    """Flat-out produce with the colleague's ``produce_all`` (acks=all, chunked awaits); a
    minimal equivalent if the demo generator is not there."""
    try:
        from streams.demo.generator import produce_all
    except ImportError:
        produce_all = None
    if produce_all is not None:
        return await produce_all(bootstrap, records, **client_kw)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, linger_ms=20, max_batch_size=256 * 1024, acks="all",
        **client_kw,
    )
    await producer.start()
    done = 0
    try:
        futures: list[asyncio.Future[Any]] = []
        for rec in records:
            futures.append(await producer.send(rec.topic, rec.value, key=rec.key, headers=HEADERS))
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                done += len(futures)
                futures.clear()
        await asyncio.gather(*futures)
        done += len(futures)
    finally:
        await producer.stop()
    return done


async def create_topics(run: Run, names: Sequence[str]) -> None:
    """Create the input topics up front with ``PARTITIONS`` partitions (auto-creation would
    use the broker default and race the first producer)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=run.bootstrap, **run.client_kw)
    await admin.start()
    try:
        resp = await admin.create_topics(
            [NewTopic(name, PARTITIONS, 1) for name in names], timeout_ms=30_000
        )
        failed = [(t[0], t[1]) for t in getattr(resp, "topic_errors", []) if t[1] != 0]
        if failed:
            raise RuntimeError(f"create_topics failed: {failed}")
        deadline = time.monotonic() + 30
        while True:  # wait until every partition has a leader, so producing does not stall
            meta = await admin.describe_topics(list(names))
            ready = {
                t["topic"] for t in meta
                if t["error_code"] == 0 and len(t["partitions"]) == PARTITIONS
                and all(p["leader"] >= 0 for p in t["partitions"])
            }
            if ready >= set(names):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"topics not ready after 30 s: {sorted(set(names) - ready)}")
            await asyncio.sleep(0.2)
    finally:
        await admin.close()


async def delete_run_topics(run: Run) -> list[str]:
    """Remove every topic of this run (input topics and the apps' internal ones): they all
    start with ``bench-<runid>``, and a broker shared by people should not fill up with them."""
    admin = AIOKafkaAdminClient(bootstrap_servers=run.bootstrap, **run.client_kw)
    await admin.start()
    try:
        mine = sorted(t for t in await admin.list_topics() if t.startswith(f"bench-{run.runid}"))
        if mine:
            await admin.delete_topics(mine, timeout_ms=30_000)
        return mine
    finally:
        await admin.close()


# ------------------------------------------------------------------------------ (a) bare


async def run_bare(run: Run, n: int, key: str, label: str) -> Result:
    """aiokafka group consumer: ``getmany`` and ``json.loads`` of each value, nothing else.

    Auto-commit is off: the floor of what a Python consumer pays per record is the point.
    """
    result = Result(key, label, n)
    consumer = AIOKafkaConsumer(
        *run.topics,
        bootstrap_servers=run.bootstrap,
        group_id=run.name(f"bare-{key}"),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        **run.client_kw,
    )
    launched = time.monotonic()
    await consumer.start()
    loads = json.loads
    ends = run.input_ends
    count = 0
    t0: float | None = None
    progress_at = launched
    try:
        while count < n:
            batch = await consumer.getmany(timeout_ms=200)
            now = time.perf_counter()
            if not batch:
                if time.monotonic() - progress_at > (STARTUP_TIMEOUT if t0 is None else STALL_TIMEOUT):
                    result.note = f"stalled at {count:,} of {n:,}"
                    return result
                continue
            if t0 is None:
                t0 = now
                cpu0 = time.process_time()
                result.details["startup_s"] = time.monotonic() - launched
            for tp, recs in batch.items():
                end = ends.get(tp, 0)
                for rec in recs:
                    if rec.offset < end:  # only the run's N records, not later additions
                        loads(rec.value)
                        count += 1
            progress_at = time.monotonic()
        result.seconds = time.perf_counter() - t0  # type: ignore[operator]
        result.details["cpu_us_per_event"] = (time.process_time() - cpu0) / n * 1e6
        result.ok = True
    finally:
        await consumer.stop()
    return result


# ------------------------------------------------------------------------------ (b) salespulse


@dataclass
class Worker:
    """A running salespulse worker subprocess and how to reach it."""

    proc: asyncio.subprocess.Process
    key: str
    app_id: str
    port: int
    launched: float
    sampler: RssSampler
    topics: list[str]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    @property
    def health_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/healthz"

    @property
    def keyed_topic(self) -> str:
        return f"{self.app_id}-keyed-events"


async def start_worker(
    run: Run, key: str, topics: list[str], *, app_id: str | None = None,
    module: str = "", **env_extra: str,
) -> Worker:
    """Launch ``python -m streams.cli worker`` (or ``python -m <module>``, a wrapper of it)
    with a fresh app id (= group, state topics), or with ``app_id`` to join (or restart into)
    the group of another worker. ``env_extra`` are further ``SALESPULSE_*`` settings (e.g. the
    session timeout)."""
    app_id = app_id or run.name(f"salespulse-{key}")
    port = free_port()
    env = run.child_env(
        SALESPULSE_APP_ID=app_id,
        SALESPULSE_WEB_PORT=str(port),
        SALESPULSE_WEB_HOST="127.0.0.1",
        SALESPULSE_INPUT_TOPICS=",".join(topics),
        SALESPULSE_KAFKA_BOOTSTRAP=run.bootstrap,
        # the worker's other topics are per run too, so that no run reads another's output
        SALESPULSE_DLQ_TOPIC=f"bench-{run.runid}.sales.events.dlq",
        SALESPULSE_ALERTS_TOPIC=f"bench-{run.runid}.sales.alerts",
        SALESPULSE_METRICS_TOPIC=f"bench-{run.runid}.sales.metrics",
        # INFO on purpose: at WARNING a Faust worker sets the root logger to DEBUG
        # (shared notes §3), which would bench the logging, not the worker.
        SALESPULSE_LOGLEVEL="INFO",
        **env_extra,
    )
    launched = time.time()
    argv = ["-m", module] if module else ["-m", "streams.cli", "worker"]
    proc = await run.spawn(f"worker-{key}", sys.executable, *argv, env=env)
    sampler = RssSampler(proc.pid)
    sampler.start()
    return Worker(proc, key, app_id, port, launched, sampler, list(topics))


async def broker_offsets(
    admin: AIOKafkaAdminClient, meta: AIOKafkaConsumer, group: str, tps: list[TopicPartition]
) -> dict[TopicPartition, tuple[int, int]]:
    """(committed, end) per partition, both from the broker; committed -1 = none yet."""
    committed = await admin.list_consumer_group_offsets(group, partitions=tps)
    ends = await meta.end_offsets(tps)
    out = {}
    for tp in tps:
        c = committed.get(tp)
        out[tp] = (c.offset if c is not None and c.offset is not None else -1, ends[tp])
    return out


def _all_committed(snapshot: dict[TopicPartition, tuple[int, int]], topics: Iterable[str]) -> bool:
    wanted = set(topics)
    return all(
        end == 0 or committed == end
        for tp, (committed, end) in snapshot.items()
        if tp.topic in wanted
    )


async def wait_commits(run: Run, worker: Worker, t_from: float) -> dict[str, Any]:
    """When the worker's commits (as the broker has them) reached the end offsets: the
    keyed-events topic (the state is durable) and the input topics (ingest is done)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=run.bootstrap, **run.client_kw)
    meta = AIOKafkaConsumer(bootstrap_servers=run.bootstrap, **run.client_kw)
    await admin.start()
    await meta.start()
    out: dict[str, Any] = {"keyed_at": None, "input_at": None}
    try:
        described = await admin.describe_topics([worker.keyed_topic])
        keyed_parts = [p["partition"] for t in described for p in t["partitions"]]
        tps = [TopicPartition(worker.keyed_topic, p) for p in sorted(keyed_parts)]
        tps += [TopicPartition(t, p) for t in worker.topics for p in range(PARTITIONS)]
        snapshot: dict[TopicPartition, tuple[int, int]] = {}
        while time.time() - t_from < COMMIT_TIMEOUT:
            snapshot = await broker_offsets(admin, meta, worker.app_id, tps)
            now = time.time()
            if out["keyed_at"] is None and _all_committed(snapshot, [worker.keyed_topic]):
                out["keyed_at"] = now
            if out["input_at"] is None and _all_committed(snapshot, worker.topics):
                out["input_at"] = now
            if out["keyed_at"] is not None and out["input_at"] is not None:
                break
            await asyncio.sleep(COMMIT_POLL)
        out["offsets"] = {
            f"{tp.topic}[{tp.partition}]": {"committed": c, "end": e}
            for tp, (c, e) in sorted(snapshot.items())
        }
        out["keyed_partitions"] = len(keyed_parts)
    finally:
        await meta.stop()
        await admin.close()
    return out


async def run_salespulse(
    run: Run, worker: Worker, session: aiohttp.ClientSession, n: int, *, interval: float
) -> Result:
    """Time (b) from its /metrics: first scrape with processed > 0 to the first scrape with all
    ``n`` events accounted for; then wait for lag 0 and the broker's commits. The table's figure
    runs to durable (lag 0 and the keyed-events commits), as (b')'s does."""
    result = Result("b", "(b) salespulse worker, /metrics every 50 ms (to durable)", n)
    if interval != METRICS_POLL:
        result.label = f"(b) salespulse worker, /metrics every {interval * 1000:g} ms (to durable)"
    d = result.details
    d["app_id"] = worker.app_id
    t0: float | None = None
    t1: float | None = None
    t_lag0: float | None = None
    renders: list[tuple[float, float]] = []  # (request sent, response read)
    last_total, progress_at = -1, time.time()
    commit_task: asyncio.Task[dict[str, Any]] | None = None
    health = Health()
    body: bytes | None = None
    last_body = b""
    pause = interval
    try:
        while True:
            if worker.proc.returncode is not None:
                result.note = f"worker exited with code {worker.proc.returncode}"
                break
            t_req = time.time()
            body = None
            if t1 is None or t_lag0 is None:
                body = await scrape(session, worker.url)
            t_resp = time.time()
            if body is not None:
                last_body = body
                renders.append((t_req, t_resp))
                if t1 is not None:
                    # timing is over: do not let our scrapes hold up the flush and commits
                    # that are being waited for (keep under a tenth of the worker's time)
                    pause = max(interval, 9 * (t_resp - t_req))
                health = parse_health(body)
                if t0 is None and health.processed > 0:
                    t0 = t_resp
                    worker.sampler.phase = "throughput"
                if health.accounted != last_total:
                    last_total, progress_at = health.accounted, t_resp
                if t1 is None and health.accounted >= n:
                    t1 = t_resp
                    d["at_completion"] = asdict(health)
                    commit_task = asyncio.create_task(wait_commits(run, worker, t1))
                if t1 is not None and t_lag0 is None and health.caught_up:
                    t_lag0 = t_resp
            if commit_task is not None and commit_task.done() and t_lag0 is not None:
                break
            if t0 is None and t_resp - worker.launched > STARTUP_TIMEOUT:
                result.note = f"no record processed {STARTUP_TIMEOUT:.0f} s after launch"
                break
            if t1 is None and t_resp - progress_at > STALL_TIMEOUT:
                result.note = f"stalled at {max(last_total, 0):,} of {n:,} events"
                break
            if t1 is not None and t_resp - t1 > COMMIT_TIMEOUT + 5:
                break  # lag never reached 0; reported below
            await asyncio.sleep(max(0.0, pause - (time.time() - t_req)))
        commits = await commit_task if commit_task is not None else {}
        (run.workdir / f"worker-{worker.key}.metrics.txt").write_bytes(last_body)
    finally:
        if commit_task is not None and not commit_task.done():
            commit_task.cancel()
    d["final"] = asdict(health)
    durations = [b - a for a, b in renders]
    d["scrapes"] = len(renders)
    d["scrape_ms_median"] = 1000 * statistics.median(durations) if durations else None
    if t0 is not None:
        d["startup_s"] = t0 - worker.launched
    if t0 is not None and t1 is not None and t1 > t0:
        # The worker renders /metrics on the loop that processes events: the share of the
        # timed interval spent inside scrapes (client-side, so an upper bound) is what the
        # observer may have cost the measured rate.
        inside = [b - a for a, b in renders if a >= t0 and b <= t1]
        d["scrapes_while_timed"] = len(inside)
        d["scrape_ms_median_while_timed"] = 1000 * statistics.median(inside) if inside else None
        d["scrape_share_of_timed"] = sum(inside) / (t1 - t0)
    if t0 is not None and t1 is not None:
        result.seconds = t1 - t0
        result.ok = True
        if health.accounted != n:
            result.note = f"accounted {health.accounted:,} events, expected {n:,}"
        d["lag_zero_after_s"] = (t_lag0 - t1) if t_lag0 is not None else None
        for name in ("keyed", "input"):
            at = commits.get(f"{name}_at")
            d[f"{name}_commits_after_s"] = (at - t1) if at is not None else None
            d[f"{name}_commits_from_t0_s"] = (at - t0) if at is not None else None
        d["offsets"] = commits.get("offsets")
        durable = [t for t in (t_lag0, commits.get("keyed_at")) if t is not None]
        if len(durable) == 2:
            d["rate_until_durable"] = n / (max(durable) - t0)
            # the table's figure is until durable, as (b')'s: with cheap scrapes a worker can
            # process most of the K events before the first scrape that shows one, and the
            # scrape-to-scrape span alone then reads as a rate near the bare consumer's
            result.seconds = max(durable) - t0
        else:
            missing = []
            if t_lag0 is None:
                missing.append("consumer lag never reached 0 on /metrics")
            if commits.get("keyed_at") is None:
                missing.append("keyed-events commits never reached the end offsets")
            result.note = "; ".join(filter(None, [result.note, *missing]))
            result.ok = False
    d["rss_peak_mb"] = worker.sampler.peak_mb("throughput")
    d["rss_peak_startup_mb"] = worker.sampler.peak_mb("startup")
    return result


async def run_salespulse_quiet(
    run: Run, workers: Worker | list[Worker], session: aiohttp.ClientSession, n: int, *,
    key: str = "b2", label: str = "(b') salespulse worker, no scrapes while timed (to durable)",
    since: float | None = None,
) -> Result:
    """Time the worker (or the workers of one app id) from the broker alone, without touching
    /metrics while it works.

    Why: the worker renders /metrics on the event loop that processes events, and at 1,000
    reps a render takes on the order of a second, so the 50 ms poll of (b) measures mostly the
    poller. Here everything is read from the broker, which costs the worker nothing:

    * t0: the first bundle appears in ``<app id>-keyed-events`` (ingest has processed its first
      poll; the aggregate applies it right after);
    * durable: the input offsets the broker holds for the group are at the run's end offsets
      (so every bundle has been produced: Faust flushes before it commits), and then the
      keyed-events offsets are at that topic's end offsets, i.e. every event is applied and in
      a durable snapshot. This includes up to one flush (0.5 s) and one commit interval (2.8 s)
      of slack, so ``n / (durable - t0)`` is a lower bound of the rate;
    * ingest done: the last time the keyed-events end offsets grew, an upper-bound companion.

    One scrape (of each worker) afterwards checks that all ``n`` events are accounted for and
    the lag is 0. ``since`` (default: the launch) is when the start-up timeout starts.
    """
    group = workers if isinstance(workers, list) else [workers]
    worker = group[0]  # app id, topics: the same for every worker of the group
    started = worker.launched if since is None else since
    result = Result(key, label, n)
    d = result.details
    d["app_id"] = worker.app_id
    admin = AIOKafkaAdminClient(bootstrap_servers=run.bootstrap, **run.client_kw)
    meta = AIOKafkaConsumer(bootstrap_servers=run.bootstrap, **run.client_kw)
    await admin.start()
    await meta.start()
    keyed = worker.keyed_topic
    input_tps = [tp for tp, end in run.input_ends.items() if end > 0 and tp.topic in worker.topics]
    keyed_tps: list[TopicPartition] = []
    t0: float | None = None
    t_fwd: float | None = None
    t_input: float | None = None
    t_durable: float | None = None
    last_keyed = -1
    progress_at = time.time()
    try:
        while True:
            now = time.time()
            exited = [w for w in group if w.proc.returncode is not None]
            if exited:
                result.note = f"worker {exited[0].key} exited with code {exited[0].proc.returncode}"
                break
            if not keyed_tps:  # the worker creates its internal topics at start-up
                if now - started > STARTUP_TIMEOUT:
                    result.note = f"{keyed} not created {STARTUP_TIMEOUT:.0f} s after launch"
                    break
                if keyed in await admin.list_topics():
                    described = await admin.describe_topics([keyed])
                    keyed_tps = sorted(
                        TopicPartition(keyed, p["partition"])
                        for t in described for p in t["partitions"]
                    )
                await asyncio.sleep(0.1)
                continue
            # committed first, end offsets second: committed == end then really means done
            committed = await admin.list_consumer_group_offsets(
                worker.app_id, partitions=keyed_tps + input_tps
            )
            ends = await meta.end_offsets(keyed_tps)
            t = time.time()
            total = sum(ends.values())
            if total != last_keyed:
                last_keyed, t_fwd, progress_at = total, t, t
                if t0 is None and total > 0:
                    t0 = t
                    cpu0 = [w.sampler.cpu_seconds() for w in group]
                    for w in group:
                        w.sampler.phase = "throughput"

            def at(tp: TopicPartition, snapshot: dict[TopicPartition, Any] = committed) -> int:
                c = snapshot.get(tp)
                return c.offset if c is not None and c.offset is not None else -1

            if t_input is None and all(at(tp) >= run.input_ends[tp] for tp in input_tps):
                t_input = t
            if t_input is not None and all(ends[tp] == 0 or at(tp) == ends[tp] for tp in keyed_tps):
                t_durable = t
                d["keyed_end_offsets"] = {tp.partition: ends[tp] for tp in keyed_tps}
                used = [(c1 - c0) for c0, c1 in zip(cpu0, (w.sampler.cpu_seconds() for w in group),
                                                     strict=True) if c0 is not None and c1 is not None]
                if len(used) == len(group):
                    d["cpu_us_per_event"] = sum(used) / n * 1e6
                break
            if t0 is None and t - started > STARTUP_TIMEOUT:
                result.note = f"no record processed {STARTUP_TIMEOUT:.0f} s after launch"
                break
            if t - progress_at > STALL_TIMEOUT + COMMIT_TIMEOUT:
                result.note = "no progress on the broker (keyed-events, commits) for too long"
                break
            await asyncio.sleep(max(0.0, METRICS_POLL - (time.time() - now)))
    finally:
        await meta.stop()
        await admin.close()
    if t0 is not None:
        d["startup_s"] = t0 - started
    if t0 is None or t_durable is None:
        return result
    assert t_fwd is not None and t_input is not None
    d["ingest_done_s"] = t_fwd - t0
    d["input_commits_s"] = t_input - t0
    d["rate_until_ingest_done"] = n / (t_fwd - t0) if t_fwd > t0 else None
    t_req = time.time()
    healths = []
    for w in group:
        body = await scrape(session, w.url)
        healths.append(parse_health(body) if body is not None else Health(lag=[-1]))
        (run.workdir / f"worker-{w.key}.metrics.txt").write_bytes(body or b"")
    d["check_scrape_ms"] = (time.time() - t_req) * 1000
    health = merge_health(healths)
    d["final"] = asdict(health)
    if health.accounted != n or not health.caught_up:
        result.note = (
            f"after the commits /metrics shows {health.accounted:,} of {n:,} events accounted, "
            f"lag {'0' if health.caught_up else 'not 0'}"
        )
        return result
    result.seconds = t_durable - t0
    result.ok = True
    d["rss_peak_mb"] = max((w.sampler.peak_mb("throughput") or 0.0) for w in group) or None
    return result


# ------------------------------------------------------------------------------ latency


def probe_event(run: Run, k: int) -> bytes:
    """An outbound call of the probe rep, stamped now; counted by ``calls_made``."""
    now = datetime.now(UTC)
    return json.dumps(
        {
            "specversion": "1.0",
            "id": f"probe-{run.runid}-{k:06d}",
            "source": "bench/probe",
            "type": "call.completed",
            "datacontenttype": "application/json",
            "time": now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z",
            "data": {
                "rep_id": PROBE_REP,
                "team_id": PROBE_TEAM,
                "direction": "outbound",
                "outcome": "no_answer",
                "talk_seconds": 0,
                "wrap_seconds": 0,
            },
        },
        separators=(",", ":"),
    ).encode()


async def run_latency(
    run: Run, worker: Worker, session: aiohttp.ClientSession, *, rate: float, seconds: float,
    reps: int, teams: int, events_before: int, scrape_interval: float, mix: str = "demo",
) -> dict[str, Any]:
    """Probe latency under a background load of ``rate`` events/s for ``seconds``.

    Two observers of /metrics, as in production: a full scrape every ``scrape_interval``
    seconds on a fixed schedule (Prometheus scrapes every 1-5 s; a scrape that overruns its
    slot delays the next, scrapes of one target never overlap), and the probe's own poll of
    ``/metrics?name[]=<probe metric>`` every ``PROBE_POLL`` s, which renders one family from the
    same cache. The poll times when a value becomes visible on /metrics; the full scrapes time
    what Prometheus would store, the wait for the next scrape included.
    """
    out: dict[str, Any] = {"target_rate": rate, "seconds": seconds, "ok": False,
                           "scrape_interval_s": scrape_interval, "probe_poll_s": PROBE_POLL}
    worker.sampler.phase = "latency"
    probe_url = f"{worker.url}?name[]={PROBE_METRIC}"
    baseline = parse_probe_count(await scrape(session, probe_url) or b"")
    if baseline:
        out["note"] = f"probe rep already had {baseline} calls before the first probe"
    load = await run.spawn(
        "load", sys.executable, "-m", "streams.bench_contenders.load",
        "--bootstrap", run.bootstrap, "--prefix", f"bench-{run.runid}.",
        "--rate", f"{rate:.1f}", "--seconds", f"{seconds + LOAD_WARMUP + 1.0:.1f}",
        "--reps", str(reps), "--teams", str(teams), "--seed", "11", "--mix", mix,
        env=run.child_env(), stdout=subprocess.PIPE,
    )
    assert load.stdout is not None
    try:
        line = await asyncio.wait_for(load.stdout.readline(), 60)
    except TimeoutError:
        line = b""
    if line.strip() != b"started":
        out["note"] = f"load generator did not start (see {run.logs['load']})"
        await stop_process(load)
        return out

    activities = f"bench-{run.runid}.sales.activities"
    producer = AIOKafkaProducer(bootstrap_servers=run.bootstrap, linger_ms=0, **run.client_kw)
    await producer.start()
    sends: list[float] = []
    futures: list[asyncio.Future[Any]] = []
    #: send -> the first observation that shows the probe, per observer
    seen_at: dict[str, list[float]] = {"poll": [], "scrape": [], "redis": [], "sse": []}
    renders: dict[str, list[float]] = {"poll": [], "scrape": []}  # request -> body read
    state = {"count": baseline, "rollback": False}
    stop = asyncio.Event()

    def seen(kind: str, count: int, t: float | None = None) -> None:
        t = time.perf_counter() if t is None else t
        lat = seen_at[kind]
        while len(lat) < len(sends) and count - baseline > len(lat):
            lat.append(t - sends[len(lat)])

    async def observe(kind: str, url: str, t_req: float) -> None:
        body = await scrape(session, url)
        t_resp = time.perf_counter()
        if body is None:
            return
        renders[kind].append(t_resp - t_req)
        count = parse_probe_count(body)
        if count < state["count"]:
            state["rollback"] = True  # the day window rolled over (UTC midnight)
        state["count"] = count
        seen(kind, count, t_resp)

    async def every(kind: str, url: str, interval: float) -> None:
        """``url`` on a fixed schedule; a slot missed by a long response is skipped."""
        start = time.perf_counter()
        k = 0
        while not stop.is_set():
            delay = start + k * interval - time.perf_counter()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), delay)
                if stop.is_set():
                    return
            await observe(kind, url, time.perf_counter())
            k = max(k + 1, math.ceil((time.perf_counter() - start) / interval))

    async def send_probes() -> None:
        start = time.perf_counter()
        k = 0
        while True:
            due = start + k * PROBE_EVERY
            if due - start >= seconds:
                return
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            value = probe_event(run, k)
            sends.append(time.perf_counter())
            futures.append(
                await producer.send(activities, value, key=PROBE_REP.encode(), headers=HEADERS)
            )
            k += 1

    # The same probes as Redis and the SSE stream show them: the probe rep's day calls_made in
    # the update messages of its channel, and in the update events of /api/v1/stream.
    async def watch_redis() -> None:
        if not run.redis_url:
            return
        redis = redis_client(run.redis_url, 5.0)
        pubsub = redis.pubsub()
        try:
            await pubsub.subscribe(Layout(worker.app_id).channel("rep", "day", PROBE_REP))
            while not stop.is_set():
                msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=0.2)
                if msg is not None:
                    seen("redis", int(json.loads(msg["data"])["kpis"].get("calls_made", 0)))
        finally:
            await pubsub.aclose()
            await redis.aclose()

    async def watch_sse() -> None:
        if not run.redis_url:
            return  # the API (and its stream) answers 503 without Redis
        url = (f"http://127.0.0.1:{worker.port}/api/v1/stream?scope=rep&id={PROBE_REP}"
               "&window=day")
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as r:
            kind = None
            async for raw in r.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "update":
                    seen("sse", int(json.loads(line[6:])["kpis"].get("calls_made", 0)))

    observers: list[asyncio.Task[None]] = []
    watchers: list[asyncio.Task[None]] = []
    try:
        await producer.partitions_for(activities)  # metadata first: not part of any probe
        await asyncio.sleep(LOAD_WARMUP)
        observers = [asyncio.create_task(every("poll", probe_url, PROBE_POLL)),
                     asyncio.create_task(every("scrape", worker.url, scrape_interval))]
        watchers = [asyncio.create_task(watch_redis()), asyncio.create_task(watch_sse())]
        await send_probes()
        # Stragglers: wait while probes keep showing up (under a heavy load values can trail
        # by tens of seconds), until none was newly seen for a while, or up to a cap.
        drain_from = last_progress = time.perf_counter()
        last_total = sum(len(lat) for lat in seen_at.values())
        while any(len(lat) < len(sends) for k, lat in seen_at.items()
                  if k in ("poll", "scrape") or run.redis_url):
            now = time.perf_counter()
            total = sum(len(lat) for lat in seen_at.values())
            if total != last_total:
                last_total, last_progress = total, now
            quiet = PROBE_DRAIN_TIMEOUT + scrape_interval + max(renders["scrape"], default=0.0)
            if now - drain_from > PROBE_DRAIN_CAP or (total and now - last_progress > quiet):
                break
            await asyncio.sleep(0.05)
        out["drain_s"] = time.perf_counter() - drain_from
    finally:
        stop.set()
        for task in observers:
            await task
        for task in watchers:
            task.cancel()
        for task in watchers:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await task
                except Exception as exc:  # noqa: BLE001 - Redis or the API away: reported
                    out[f"note_{task.get_coro().__name__}"] = repr(exc)
        await producer.stop()
    failed_sends = sum(1 for f in futures if f.done() and f.exception() is not None)

    try:
        tail = await asyncio.wait_for(load.stdout.readline(), seconds + 60)
        load_stats = json.loads(tail) if tail.strip() else {}
    except (TimeoutError, ValueError):
        load_stats = {}
    await stop_process(load, 10)

    # Did the worker keep up? It must account for everything produced to its topics.
    expected = events_before + int(load_stats.get("sent", 0)) + len(sends)
    t_end = time.monotonic()
    health = Health()
    body = None
    while time.monotonic() - t_end < BACKLOG_TIMEOUT:
        body = await scrape(session, worker.url)
        if body is not None:
            health = parse_health(body)
            if health.accounted >= expected and health.caught_up:
                break
        await asyncio.sleep(0.1)
    # how many probes /metrics shows in the end (a probe never seen: late, or lost?)
    out["probe_count_at_end"] = parse_probe_count(body) - baseline if body is not None else None
    out.update(
        probes_sent=len(sends),
        probe_send_failures=failed_sends,
        day_window_rolled_over=state["rollback"],
        load=load_stats,
        worker_expected_total=expected,
        worker_accounted_total=health.accounted,
        worker_backlog_drain_s=time.monotonic() - t_end,
        worker_kept_up=health.accounted >= expected and health.caught_up,
        rss_peak_mb=worker.sampler.peak_mb("latency"),
        redis=bool(run.redis_url),
    )
    for kind, lat in seen_at.items():
        out[f"{kind}_seen"] = len(lat)
        out[f"{kind}_p50_ms"] = _ms(quantile(lat, 0.50))
        out[f"{kind}_p99_ms"] = _ms(quantile(lat, 0.99))
        out[f"{kind}_max_ms"] = _ms(max(lat, default=None))
        # probe by probe (one per PROBE_EVERY), to see whether the latency settles during the
        # phase: the (b') worker comes to it straight from its backlog
        out[f"{kind}_series_ms"] = [_ms(x) for x in lat]
        late = lat[len(lat) // 2:]
        out[f"{kind}_p99_second_half_ms"] = _ms(quantile(late, 0.99))
    for kind, durations in renders.items():
        out[f"{kind}_requests"] = len(durations)
        out[f"{kind}_render_ms_median"] = _ms(statistics.median(durations) if durations else None)
        out[f"{kind}_render_ms_p99"] = _ms(quantile(durations, 0.99))
    out["ok"] = (
        bool(sends) and out["poll_seen"] == len(sends) and out["scrape_seen"] == len(sends)
        and not state["rollback"]
    )
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


# ------------------------------------------------------------------------------ render, memory


async def run_render(run: Run, reps: int, teams: int) -> dict[str, Any]:
    """`python -m streams.bench_render --json` in a child (no Kafka, nothing else running): the
    /metrics renderer alone on ``reps`` reps, per kind of scrape."""
    proc = await run.spawn(
        "render", sys.executable, "-m", "streams.bench_render", "--reps", str(reps),
        "--teams", str(teams), "--rounds", "3", "--json",
        env=run.child_env(), stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        out = await asyncio.wait_for(proc.stdout.read(), 300)
    except TimeoutError:
        await stop_process(proc, 5)
        return {"note": "streams.bench_render did not finish in 300 s"}
    await proc.wait()
    try:
        return dict(json.loads(out.decode().strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"note": f"streams.bench_render failed (exit {proc.returncode}, "
                        f"see {run.logs['render']})"}


async def run_tracemalloc(run: Run, session: aiohttp.ClientSession, n: int) -> dict[str, Any]:
    """(m): a fresh worker under tracemalloc (streams.bench_contenders.traced_worker) works
    the run's backlog to durable and serves one /metrics; then it writes its largest allocation
    sites. Its rate and RSS are not figures (tracing slows it several times)."""
    directory = run.workdir / "tracemalloc"
    worker = await start_worker(run, "m", run.topics, module="streams.bench_contenders.traced_worker",
                                SALESPULSE_BENCH_TRACEMALLOC=str(directory))
    out: dict[str, Any] = {}
    try:
        done = await run_salespulse_quiet(run, worker, session, n, key="m",
                                          label="(m) worker under tracemalloc")
        out["worked_backlog"] = done.ok
        out["state_keys"] = (done.details.get("final") or {}).get("state_keys")
        out["rss_peak_mb_traced"] = worker.sampler.peak_mb()
        if not done.ok:
            out["note"] = f"the traced worker did not finish the backlog: {done.note}"
        (directory / "snapshot.request").touch()
        result = directory / "tracemalloc.json"
        deadline = time.monotonic() + TRACEMALLOC_TIMEOUT
        while not result.exists() and time.monotonic() < deadline:
            if worker.proc.returncode is not None:
                break
            await asyncio.sleep(0.5)
        if result.exists():
            out.update(json.loads(result.read_text()))
            out["path"] = str(directory / "tracemalloc.txt")
        else:
            out["note"] = "no tracemalloc snapshot written"
    finally:
        await finish_worker(run, worker)
    return out


# ------------------------------------------------------------------------------ (c), (d) stock


async def run_stock(run: Run, mode: str, topics: list[str], n: int, key: str, label: str) -> Result:
    """A stock Faust worker subprocess; its own timestamps (first and n-th record) time it."""
    result = Result(key, label, n)
    progress_path = run.workdir / f"stock-{mode}.json"
    env = run.child_env(
        BENCH_APP_ID=run.name(f"stock-{mode}"),
        BENCH_TOPICS=",".join(topics),
        BENCH_BOOTSTRAP=run.bootstrap,
        BENCH_MODE=mode,
        BENCH_EXPECT=str(n),
        BENCH_PROGRESS=str(progress_path),
        BENCH_DATADIR=str(run.workdir / f"stock-{mode}-data"),
    )
    launched = time.time()
    proc = await run.spawn(
        f"stock-{mode}", sys.executable, "-m", "streams.bench_contenders.stock_faust",
        "worker", "-l", "info", "--without-web", env=env,
    )
    sampler = RssSampler(proc.pid)
    sampler.start()
    progress: dict[str, Any] = {}
    last_count, progress_at = -1, time.time()
    try:
        while True:
            await asyncio.sleep(0.2)
            with contextlib.suppress(OSError, ValueError):
                progress = json.loads(progress_path.read_text())
            now = time.time()
            if progress.get("first") and sampler.phase == "startup":
                sampler.phase = "run"
            if progress.get("last") and (mode != "table" or progress.get("flushed")):
                break
            if proc.returncode is not None:
                result.note = f"worker exited with code {proc.returncode}"
                break
            count = int(progress.get("count") or 0)
            if count != last_count:
                last_count, progress_at = count, now
            if not progress.get("first") and now - launched > STARTUP_TIMEOUT:
                result.note = f"no record processed {STARTUP_TIMEOUT:.0f} s after launch"
                break
            if progress.get("first") and now - progress_at > STALL_TIMEOUT:
                result.note = f"stalled at {count:,} of {n:,}"
                break
    finally:
        await stop_process(proc)
        await sampler.stop()
    first, last = progress.get("first"), progress.get("last")
    if first and last:
        result.seconds = last - first
        result.ok = True
        result.details["startup_s"] = first - launched
        if progress.get("flushed"):
            result.details["rate_until_changelog_flushed"] = n / (progress["flushed"] - first)
    result.details["rss_peak_mb"] = sampler.peak_mb("run")
    result.details["log"] = scan_log(run.logs[f"stock-{mode}"])
    return result


# ------------------------------------------------------------------------------ the run


def git_state() -> dict[str, Any]:
    """Which code the workers ran: HEAD and the files that differ from it. The worker is
    imported from the work tree at each launch, so an edit during a run changes what runs."""
    def git(*argv: str) -> str:
        try:
            return subprocess.run(
                ["git", *argv], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10,
                check=False,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    status = git("status", "--porcelain", "--untracked-files=no")
    return {
        "head": git("rev-parse", "--short", "HEAD") or None,
        "modified": [line[3:] for line in status.splitlines() if line.strip()],
    }


def _fmt_rate(x: float | None) -> str:
    return f"{x:,.0f}" if x is not None else "-"


def render_table(results: list[Result]) -> str:
    base = next((r.rate for r in results if r.key == "a"), None)
    rows = [("contender", "events", "seconds", "events/s", "ratio to (a)")]
    for r in results:
        rate = r.rate
        rows.append(
            (
                r.label,
                f"{r.events:,}",
                f"{r.seconds:.2f}" if r.ok and r.seconds is not None else "-",
                _fmt_rate(rate),
                f"{rate / base:.3f}" if rate is not None and base else "-",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for i, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells))
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ SPEC section 7

GOAL_RATIO = 0.6
GOAL_RSS_MB = 150.0
GOAL_LATENCY_MS = 250.0
GOAL_RENDER_MS = 100.0
GOAL_RECOVERY_S = 10.0
RECOVERY_KEYS = 100_000


def _verdict(value: float | None, goal: float, *, at_least: bool = False) -> str:
    if value is None:
        return "not measured"
    return "met" if (value >= goal if at_least else value < goal) else "NOT MET"


def spec_rows(report: dict[str, Any], results: list[Result]) -> list[tuple[str, str, str, str]]:
    """SPEC section 7's figures of one run: (figure, goal, measured, verdict) per line."""
    rows: list[tuple[str, str, str, str]] = []
    by_key = {r.key: r for r in results}
    b2 = by_key.get("b2")
    # The bare consumer runs first (a) and last (a'); the box drifts in between (other work on
    # it), so the ratio is judged against the faster of the two: it is the lower ratio.
    bare = {k: by_key[k].rate for k in ("a", "a2") if k in by_key and by_key[k].rate}
    base = max(bare.values(), default=None)
    ratio = b2.rate / base if b2 is not None and b2.rate is not None and base else None
    measured = _num(ratio, ".3f")
    if ratio is not None:
        upper = b2.details.get("rate_until_ingest_done")  # type: ignore[union-attr]
        names = {"a": "(a)", "a2": "(a')"}
        runs = ", ".join(f"{names[k]} {_fmt_rate(v)}/s" for k, v in bare.items())
        measured += (f" ({_fmt_rate(b2.rate)}/s; bare {runs}; "  # type: ignore[union-attr]
                     f"ingest done {_num(upper / base if upper else None, '.2f')})")
        if "a" in bare and bare["a"] * 1.2 < base:  # (a) ran on a busier box than (a')
            measured += f"; to (a) alone {b2.rate / bare['a']:.3f}"  # type: ignore[union-attr]
        cpu = _cpu_ratio(_bare_cpu(results), b2.details.get("cpu_us_per_event"))  # type: ignore[union-attr]
        if cpu is not None:
            measured += f"; CPU per event, bare / worker {cpu:.3f}"
    rows.append(("throughput (b'), until durable and committed, to bare",
                 f">= {GOAL_RATIO:g}", measured, _verdict(ratio, GOAL_RATIO, at_least=True)))

    rss = b2.details.get("rss_peak_mb") if b2 is not None else None
    rows.append(("peak RSS, backlog phase ((b'), 1 worker)", f"< {GOAL_RSS_MB:.0f} MB",
                 f"{_num(rss, '.0f')} MB", _verdict(rss, GOAL_RSS_MB)))
    lat = report.get("latency") or {}
    rss = lat.get("rss_peak_mb")
    rows.append(("peak RSS, sustained-load phase (latency)", f"< {GOAL_RSS_MB:.0f} MB",
                 f"{_num(rss, '.0f')} MB", _verdict(rss, GOAL_RSS_MB)))

    rate = lat.get("target_rate")
    at = f" at {_fmt_rate(rate)}/s" if rate else ""
    poll = lat.get("probe_poll_s", PROBE_POLL) * 1000
    for kind, what in (("poll", f"/metrics (name[] poll every {poll:.0f} ms)"),
                       ("redis", "Redis (update channel)"), ("sse", "SSE (/api/v1/stream)")):
        p50, p99 = lat.get(f"{kind}_p50_ms"), lat.get(f"{kind}_p99_ms")
        seen = lat.get(f"{kind}_seen")
        measured = (f"p50 {_num(p50, '.0f')} ms, p99 {_num(p99, '.0f')} ms "
                    f"({seen} of {lat.get('probes_sent')} seen{at})") if seen else "-"
        rows.append((f"end-to-end p99 to {what}", f"< {GOAL_LATENCY_MS:.0f} ms", measured,
                     _verdict(p99 if seen else None, GOAL_LATENCY_MS)))
    p50, p99 = lat.get("scrape_p50_ms"), lat.get("scrape_p99_ms")
    interval = lat.get("scrape_interval_s")
    rows.append((f"  the same as Prometheus sees it (full scrape every {_num(interval, 'g')} s)",
                 "-", f"p50 {_num(p50, '.0f')} ms, p99 {_num(p99, '.0f')} ms"
                 if p99 is not None else "-", "(includes the wait for the next scrape)"))

    render = (report.get("render") or {}).get("scrapes") or {}
    worst = render.get("every rep changed") or {}
    idle = render.get("nothing changed") or {}
    total = worst.get("total_ms")
    reps = (report.get("render") or {}).get("reps", report.get("reps"))
    rows.append((f"/metrics render, {reps:,} reps alone, every rep changed",
                 f"< {GOAL_RENDER_MS:.0f} ms",
                 f"{_num(total, '.0f')} ms ({_num(worst.get('mb'), '.1f')} MB; nothing changed "
                 f"{_num(idle.get('total_ms'), '.0f')} ms)" if total is not None else "-",
                 _verdict(total, GOAL_RENDER_MS)))
    med, p99 = lat.get("scrape_render_ms_median"), lat.get("scrape_render_ms_p99")
    rows.append(("/metrics full scrape of the worker under that load, median",
                 f"< {GOAL_RENDER_MS:.0f} ms",
                 f"{_num(med, '.0f')} ms (p99 {_num(p99, '.0f')} ms, "
                 f"{lat.get('scrape_requests', 0)} scrapes)" if med is not None else "-",
                 _verdict(med, GOAL_RENDER_MS)))

    for r in (report.get("group") or {}).get("restarts") or []:
        keys = r.get("state_keys_after") or r.get("state_keys_before")
        secs = r.get("metrics_s")
        verdict = _verdict(secs, GOAL_RECOVERY_S)
        if keys is not None and keys < RECOVERY_KEYS and verdict != "not measured":
            verdict += f" (< {RECOVERY_KEYS:,} keys)"
        how = ", static membership" if r.get("static") else ""
        rows.append((f"recovery: restarted after {r.get('signal')}{how}, serving /metrics again",
                     f"< {GOAL_RECOVERY_S:.0f} s", f"{_num(secs, '.2f')} s with "
                     f"{_num(keys, ',')} state keys (all assigned after "
                     f"{_num(r.get('assigned_s'), '.1f')} s)", verdict))
    if not (report.get("group") or {}).get("restarts"):
        rows.append(("recovery: a restarted worker serving again", f"< {GOAL_RECOVERY_S:.0f} s",
                     "-", "not measured"))
    return rows


def render_spec(report: dict[str, Any], results: list[Result]) -> str:
    """The SPEC section 7 block: one line per figure, goal, measured, verdict."""
    load = [x[0] for x in (report.get("loadavg_start"), report.get("loadavg_end")) if x]
    context = (f"one run: {report.get('events', 0):,} events, {report.get('mix', 'demo')} mix, "
               f"{report.get('reps')} reps; load avg "
               f"{' -> '.join(f'{x:.1f}' for x in load) or '-'} on {report.get('cpu_count')} CPUs")
    rows = [("figure", "goal", "measured", "verdict"), *spec_rows(report, results)]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [f"SPEC section 7 ({context})"]
    for i, (figure, goal, measured, verdict) in enumerate(rows):
        lines.append(f"{figure.ljust(widths[0])}  {goal.ljust(widths[1])}  "
                     f"{measured.ljust(widths[2])}  {verdict}".rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths) + "  -------")
    return "\n".join(lines)


def _say(*parts: Any) -> None:
    print(*parts, flush=True)


async def finish_worker(run: Run, worker: Worker, result: Result | None = None) -> dict[str, Any]:
    """Stop a salespulse worker and keep what its life says: RSS, exit code, log problems
    (in ``result``'s details, if given, and returned)."""
    await worker.sampler.stop()
    out = {
        "rss_peak_overall_mb": worker.sampler.peak_mb(),
        "exit_code": await stop_process(worker.proc),
        "log": scan_log(run.logs[f"worker-{worker.key}"]),
        "stdout_log": scan_log(run.logs[f"worker-{worker.key} (stdout)"]),
    }
    if result is not None:
        result.details.update(out)
    return out


async def bench(args: argparse.Namespace) -> int:
    settings = Settings()
    client_kw = kafka_client_kwargs(settings)
    runid = datetime.now(UTC).strftime("%Y%m%d%H%M%S") + "-" + secrets.token_hex(2)
    workdir = Path("/tmp") / f"sp-bench-{runid}"
    workdir.mkdir(parents=True)
    n = args.events
    k = min(args.stock_events, n)
    run = Run(
        runid=runid,
        bootstrap=args.bootstrap,
        workdir=workdir,
        client_kw=client_kw,
        topics=[f"bench-{runid}.{t}" for t in DEFAULT_INPUT_TOPICS],
        stock_topics=[f"bench-{runid}-first{k}.{t}" for t in DEFAULT_INPUT_TOPICS]
        if k < n else [f"bench-{runid}.{t}" for t in DEFAULT_INPUT_TOPICS],
    )
    report: dict[str, Any] = {
        "runid": runid,
        "started": datetime.now(UTC).isoformat(),
        "bootstrap": run.bootstrap,
        "workdir": str(workdir),
        "events": n,
        "stock_events": k,
        "reps": args.reps,
        "teams": args.teams,
        "mix": args.mix,
        "partitions": PARTITIONS,
        "topics": run.topics,
        "stock_topics": run.stock_topics,
        "cpu_count": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "git_start": git_state(),
    }
    results: list[Result] = []
    worker: Worker | None = None
    exit_code = 0
    # aiokafka's own warnings (e.g. produce retries on NotLeaderForPartition right after the
    # topics are created) go to a file: they are retried, and would clutter the report
    handler = logging.FileHandler(workdir / "bench.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    for name in ("aiokafka", "kafka"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).propagate = False
    _say(f"[bench] run {runid}: {n:,} events ({args.mix} mix, {args.reps} reps, {args.teams} "
         f"teams), broker {run.bootstrap}, logs in {workdir}")
    try:
        report["redis"] = await ensure_redis(run, settings.redis_url)
        if report["redis"].get("note"):
            _say(f"[bench] {report['redis']['note']}")
        t = time.perf_counter()
        records = generate(n, args.reps, args.teams, args.mix)
        report["generate_s"] = time.perf_counter() - t
        report["mean_value_bytes"] = sum(len(r.value) for r in records) / max(len(records), 1)
        report["lead_lane_share"] = lead_lane_share(records)
        wanted = set(DEFAULT_INPUT_TOPICS)
        stray = {r.topic for r in records} - wanted
        if stray:
            raise RuntimeError(f"the demo mix produced topics the worker does not read: {stray}")
        names = list(run.topics) + ([] if k >= n else run.stock_topics)
        await create_topics(run, names)
        t = time.perf_counter()
        sent = await produce(run.bootstrap, retarget(records, f"bench-{runid}."), client_kw)
        report["produce_s"] = time.perf_counter() - t
        if sent != n:
            raise RuntimeError(f"produced {sent:,} of {n:,} events")
        if k < n:
            await produce(run.bootstrap, retarget(records[:k], f"bench-{runid}-first{k}."), client_kw)
        if args.skip_group:
            del records  # else kept: (g) produces them again, to its own topics
        _say(f"[bench] produced {n:,} events to {len(run.topics)} topics x {PARTITIONS} "
             f"partitions in {report['produce_s']:.1f} s"
             + (f" (+ the first {k:,} to the subset topics)" if k < n else ""))

        meta = AIOKafkaConsumer(bootstrap_servers=run.bootstrap, **client_kw)
        await meta.start()
        try:
            run.input_ends = await meta.end_offsets(
                [TopicPartition(t, p) for t in {*run.topics, *run.stock_topics}
                 for p in range(PARTITIONS)]
            )
        finally:
            await meta.stop()

        _say("[bench] (a) bare aiokafka ...")
        results.append(await run_bare(run, n, "a", "(a) bare aiokafka getmany + json.loads"))
        _say(f"[bench]     {_fmt_rate(results[-1].rate)} events/s {results[-1].note}")

        suffix = f", first {k:,}" if k < n else ""
        if not args.skip_stock:
            _say(f"[bench] (c) stock Faust, decode only ({k:,} events) ...")
            results.append(await run_stock(run, "decode", run.stock_topics, k, "c",
                                           f"(c) stock Faust agent, json.loads{suffix}"))
            _say(f"[bench]     {_fmt_rate(results[-1].rate)} events/s {results[-1].note}")
            _say(f"[bench] (d) stock Faust + windowed table write ({k:,} events) ...")
            results.append(await run_stock(run, "table", run.stock_topics, k, "d",
                                           f"(d) stock Faust + tumbling table write{suffix}"))
            _say(f"[bench]     {_fmt_rate(results[-1].rate)} events/s {results[-1].note}")

        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            _say(f"[bench] (b) salespulse worker, /metrics every {args.metrics_interval * 1000:g} ms "
                 f"({k:,} events) ...")
            worker = await start_worker(run, "b", run.stock_topics)
            b = await run_salespulse(run, worker, session, k, interval=args.metrics_interval)
            if k < n:
                b.label += f", first {k:,}"
            results.append(b)
            await finish_worker(run, worker, b)
            worker = None
            _say(f"[bench]     {_fmt_rate(b.rate)} events/s {b.note}")

            if args.tracemalloc:
                _say("[bench] (m) a worker with tracemalloc on the same backlog: its largest "
                     "allocation sites ...")
                report["memory"] = await run_tracemalloc(run, session, n)
                _say(f"[bench]     {report['memory'].get('note') or 'written to '}"
                     f"{report['memory'].get('path', '')}")

            _say("[bench] (b') salespulse worker, timed from the broker, no scrapes ...")
            worker = await start_worker(run, "b2", run.topics)
            b2 = await run_salespulse_quiet(run, worker, session, n)
            results.append(b2)
            _say(f"[bench]     {_fmt_rate(b2.rate)} events/s {b2.note}")

            base_rate = b2.rate if b2.rate is not None else b.rate
            which = "(b')" if b2.rate is not None else "(b)"
            if args.latency_rate is not None:  # a fixed load: latencies comparable across runs
                base_rate, which = 2 * args.latency_rate, "--latency-rate x 2"
            if args.latency_seconds > 0 and base_rate is not None:
                _say(f"[bench] latency on the (b') worker: load {base_rate / 2:,.0f} events/s "
                     f"(half of {which}) for {args.latency_seconds:g} s, a probe every "
                     f"{PROBE_EVERY * 1000:.0f} ms, polled every {PROBE_POLL * 1000:.0f} ms, a "
                     f"full scrape every {args.scrape_interval:g} s ...")
                report["latency"] = await run_latency(
                    run, worker, session, rate=base_rate / 2, seconds=args.latency_seconds,
                    reps=args.reps, teams=args.teams, events_before=n,
                    scrape_interval=args.scrape_interval, mix=args.mix,
                )
                report["latency"]["rate_from"] = which
            elif args.latency_seconds > 0:
                report["latency"] = {"ok": False, "note": "skipped: neither (b) nor (b') has a rate"}
            await finish_worker(run, worker, b2)
            worker = None

            if not args.skip_group:
                from streams.bench_group import group_ok, run_group

                _say(f"[bench] (g) two salespulse workers of one app id, {n:,} events ...")
                g, report["group"] = await run_group(run, session, args, records, settings.partitions)
                del records
                results.append(g)
                if not group_ok(report["group"]):
                    exit_code = 1

        if not args.skip_render:
            _say(f"[bench] /metrics render of {args.reps} reps, alone (streams.bench_render) ...")
            report["render"] = await run_render(run, args.reps, args.teams)

        _say("[bench] (a') bare aiokafka again (drift of the box during the run) ...")
        results.append(await run_bare(run, n, "a2", "(a') bare aiokafka, repeat"))
    except Exception as exc:  # report what we have; the traceback is in the JSON and on stderr
        import traceback

        traceback.print_exc()
        report["error"] = f"{type(exc).__name__}: {exc}"
        exit_code = 1
    finally:
        if worker is not None:
            await worker.sampler.stop()
            await stop_process(worker.proc)
        for proc in run.procs:
            await stop_process(proc)
        if not args.keep_topics:
            with contextlib.suppress(Exception):
                report["deleted_topics"] = await delete_run_topics(run)

    report["loadavg_end"] = os.getloadavg()
    report["git_end"] = git_state()
    report["results"] = [
        {**asdict(r), "rate": r.rate} for r in results
    ]
    base = next((r.rate for r in results if r.key == "a"), None)
    for row, r in zip(report["results"], results, strict=True):
        row["ratio_to_a"] = (r.rate / base) if r.rate is not None and base else None
    if any(not r.ok for r in results) or not results:
        exit_code = 1
    lat = report.get("latency")
    if lat is not None and not lat.get("ok"):
        exit_code = 1
    if "group" in report:
        rates = {r.key: r.rate for r in results}
        g_rate, one = rates.get("g"), rates.get("b2")
        report["group"]["group_over_one_worker"] = g_rate / one if g_rate and one else None
    print_report(report, results, lat)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str) + "\n")
        _say(f"[bench] figures written to {args.json}")
    return exit_code


def _bare_cpu(results: list[Result]) -> float | None:
    """The bare consumer's CPU per event (µs): the cheaper of its two runs."""
    return min((r.details["cpu_us_per_event"] for r in results
                if r.key in ("a", "a2") and r.details.get("cpu_us_per_event")), default=None)


def _cpu_ratio(bare: float | None, worker: float | None) -> float | None:
    """Bare CPU per event over the worker's: the throughput ratio CPU-bound work would have."""
    return bare / worker if bare and worker else None


def print_report(report: dict[str, Any], results: list[Result], lat: dict[str, Any] | None) -> None:
    """Everything a person needs to judge the run, as plain text."""
    _say("")
    _say(f"salespulse bench {report['runid']}  ({report['events']:,} events, "
         f"{report['reps']} reps, {report['teams']} teams, {report['partitions']} partitions/topic; "
         f"load avg {report['loadavg_start'][0]:.1f} -> {report['loadavg_end'][0]:.1f} "
         f"on {report['cpu_count']} CPUs)")
    g0, g1 = report.get("git_start") or {}, report.get("git_end") or {}
    changed = "" if g0 == g1 else "; the work tree CHANGED during the run"
    _say(f"code: HEAD {g0.get('head')}, {len(g0.get('modified', []))} modified tracked files{changed}")
    redis = report.get("redis") or {}
    _say(f"mix: {report.get('mix', 'demo')} ({_num(report.get('lead_lane_share'), '.0%')} of the "
         f"events also travel the lead lane); Redis: {redis.get('url') or 'none'}"
         f"{' (started by the bench)' if redis.get('started') else ''}")
    _say(render_table(results))
    bare_cpu = _bare_cpu(results)
    if report["stock_events"] < report["events"]:
        slow = [r.key for r in results if r.key in ("b", "c", "d")]
        if slow:
            _say(f"({'), ('.join(slow)}) read the first {report['stock_events']:,} of the same "
                 f"records (own topics); rates are events/s all the same.")
    for r in results:
        if r.note:
            _say(f"note {r.key}: {r.note}")
    for r in results:
        d = r.details
        if r.key == "b":
            _say("")
            _say(r.label)
            _say(f"  peak RSS while processing: {_num(d.get('rss_peak_mb'), '.0f')} MB "
                 f"(whole life: {_num(d.get('rss_peak_overall_mb'), '.0f')} MB)")
            _say(f"  launch -> first record processed: {_num(d.get('startup_s'), '.1f')} s")
            _say(f"  all events in -> lag 0 on /metrics: +{_num(d.get('lag_zero_after_s'), '.2f')} s;"
                 f" keyed-events commits at end offsets (broker): "
                 f"+{_num(d.get('keyed_commits_after_s'), '.2f')} s;"
                 f" input commits: +{_num(d.get('input_commits_after_s'), '.2f')} s")
            _say(f"  rate until durable (first record -> commits caught up): "
                 f"{_fmt_rate(d.get('rate_until_durable'))} events/s")
            fin = d.get("final") or {}
            _say(f"  counters: processed {fin.get('processed', 0):,}, duplicate "
                 f"{fin.get('duplicate', 0):,}, rejected {fin.get('rejected', 0):,}, "
                 f"late {fin.get('late', 0):,}")
            share = d.get("scrape_share_of_timed")
            _say(f"  /metrics scrapes: {d.get('scrapes', 0)}, median "
                 f"{_num(d.get('scrape_ms_median'), '.1f')} ms; while timed: "
                 f"{d.get('scrapes_while_timed', 0)}, median "
                 f"{_num(d.get('scrape_ms_median_while_timed'), '.1f')} ms, "
                 f"{_num(share * 100 if share is not None else None, '.0f')}% of the timed "
                 f"interval spent inside scrapes")
            if share is not None and share > 0.2:
                _say("  WARNING: the worker renders /metrics on its event loop; with this share "
                     "of the interval inside scrapes, (b) measures the observer. See (b').")
            _log_lines("worker stderr", d.get("log"))
        elif r.key == "b2":
            _say("")
            _say(r.label)
            _say(f"  launch -> first bundle forwarded: {_num(d.get('startup_s'), '.1f')} s; "
                 f"ingest done +{_num(d.get('ingest_done_s'), '.2f')} s "
                 f"({_fmt_rate(d.get('rate_until_ingest_done'))} events/s, an upper bound); "
                 f"input commits +{_num(d.get('input_commits_s'), '.2f')} s; "
                 f"durable +{_num(r.seconds, '.2f')} s (the table's figure, a lower bound)")
            _say(f"  CPU until durable: {_num(d.get('cpu_us_per_event'), '.1f')} µs per event, all "
                 f"threads (bare (a): {_num(bare_cpu, '.1f')} µs; ratio "
                 f"{_num(_cpu_ratio(bare_cpu, d.get('cpu_us_per_event')), '.3f')}): less moved "
                 f"by other load on the box than the rates")
            fin = d.get("final") or {}
            _say(f"  check scrape afterwards ({_num(d.get('check_scrape_ms'), '.0f')} ms): "
                 f"processed {fin.get('processed', 0):,}, duplicate {fin.get('duplicate', 0):,}, "
                 f"rejected {fin.get('rejected', 0):,}, late {fin.get('late', 0):,}")
            _say(f"  peak RSS while processing: {_num(d.get('rss_peak_mb'), '.0f')} MB "
                 f"(whole life incl. latency phase: {_num(d.get('rss_peak_overall_mb'), '.0f')} MB)")
            _log_lines("worker stderr", d.get("log"))
        elif r.key in ("c", "d"):
            extra = ""
            if d.get("rate_until_changelog_flushed"):
                extra = f", until changelog flushed {_fmt_rate(d['rate_until_changelog_flushed'])}/s"
            _say(f"{r.label}: start-up {_num(d.get('startup_s'), '.1f')} s, "
                 f"peak RSS {_num(d.get('rss_peak_mb'), '.0f')} MB{extra}")
            _log_lines(f"stock-{r.key} log", d.get("log"))
    if report.get("group") is not None:
        from streams.bench_group import print_group

        print_group(next((r for r in results if r.key == "g"), None), report["group"])
    if lat is not None:
        _say("")
        _say("end-to-end latency (probe send -> first observation showing it, day window of "
             "calls_made)")
        if lat.get("probes_sent") is None:
            _say(f"  not measured: {lat.get('note')}")
        else:
            load = lat.get("load") or {}
            _say(f"  background load ({report.get('mix', 'demo')} mix): target "
                 f"{_fmt_rate(lat['target_rate'])}/s (half of {lat.get('rate_from', '?')}), "
                 f"achieved {_fmt_rate(load.get('rate'))}/s ({load.get('sent', 0):,} events)")
            what = {
                "poll": f"/metrics?name[]={PROBE_METRIC} every "
                        f"{lat['probe_poll_s'] * 1000:.0f} ms (visible on /metrics)",
                "scrape": f"full /metrics scrape every {lat['scrape_interval_s']:g} s "
                          "(as Prometheus sees it)",
                "redis": "Redis, update message on the probe rep's channel",
                "sse": "/api/v1/stream (SSE) update event",
            }
            for kind, label in what.items():
                _say(f"  {label}: {lat.get(f'{kind}_seen')} of {lat['probes_sent']} seen; "
                     f"p50 {_num(lat.get(f'{kind}_p50_ms'), '.0f')} ms, "
                     f"p99 {_num(lat.get(f'{kind}_p99_ms'), '.0f')} ms, "
                     f"max {_num(lat.get(f'{kind}_max_ms'), '.0f')} ms")
            if not lat.get("redis"):
                _say("  (no Redis: Redis and SSE not measured)")
            _say(f"  waited {_num(lat.get('drain_s'), '.1f')} s after the last probe; /metrics "
                 f"shows {_num(lat.get('probe_count_at_end'), 'd')} of {lat['probes_sent']} "
                 "probes after the load")
            _say(f"  request -> body: polls median {_num(lat.get('poll_render_ms_median'), '.1f')} "
                 f"ms, p99 {_num(lat.get('poll_render_ms_p99'), '.1f')} ms "
                 f"({lat.get('poll_requests')}); full scrapes median "
                 f"{_num(lat.get('scrape_render_ms_median'), '.1f')} ms, p99 "
                 f"{_num(lat.get('scrape_render_ms_p99'), '.1f')} ms ({lat.get('scrape_requests')})")
            _say(f"  worker kept up: {'yes' if lat['worker_kept_up'] else 'NO'} "
                 f"({lat['worker_accounted_total']:,} of {lat['worker_expected_total']:,} accounted, "
                 f"{lat['worker_backlog_drain_s']:.1f} s after the load); "
                 f"peak RSS {_num(lat.get('rss_peak_mb'), '.0f')} MB")
            if lat.get("day_window_rolled_over"):
                _say("  WARNING: the day window rolled over during the probes: latencies unreliable")
            for key in ("note", "note_watch_redis", "note_watch_sse"):
                if lat.get(key):
                    _say(f"  {key.replace('_', ' ')}: {lat[key]}")
    render = report.get("render")
    if render:
        _say("")
        if render.get("scrapes"):
            _say(f"/metrics render alone (streams.bench_render, {render.get('reps')} reps, "
                 f"{render.get('windows'):,} windows, median of {render.get('rounds')}): capture "
                 "on the loop + render in a thread + the body's writes on the loop")
            for name, f in render["scrapes"].items():
                _say(f"  {name:<22} {f['capture_ms']:7.1f} + {f['render_ms']:7.1f} + "
                     f"{f.get('write_ms', 0.0):5.1f} ms = {f['total_ms']:7.1f} ms, {f['mb']:.1f} MB")
        else:
            _say(f"/metrics render alone: {render.get('note')}")
    memory = report.get("memory")
    if memory:
        _say("")
        _say(f"(m) largest allocation sites of a worker after the backlog (tracemalloc, "
             f"{_num(memory.get('state_keys'), ',')} state keys): traced "
             f"{_num(memory.get('traced_mb'), '.1f')} MB, peak "
             f"{_num(memory.get('traced_peak_mb'), '.1f')} MB")
        for row in (memory.get("by_line") or [])[:10]:
            _say(f"  {row['mb']:8.1f} MB  {row['blocks']:>10,} blocks  {row['site']}")
        if memory.get("note"):
            _say(f"  note: {memory['note']}")
        if memory.get("path"):
            _say(f"  top 20 by line and by file: {memory['path']}")
    _say("")
    _say(render_spec(report, results))
    if report.get("error"):
        _say(f"\nERROR: {report['error']}")
    _say(f"\nlogs: {report['workdir']}")


def _num(x: float | None, fmt: str) -> str:
    return format(x, fmt) if x is not None else "-"


def _log_lines(what: str, scan: dict[str, Any] | None) -> None:
    if not scan:
        return
    counts = scan.get("counts") or {}
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no warnings or errors"
    _say(f"  {what} ({scan['path']}): {summary}")
    for kind in (scan.get("messages") or [])[:6]:
        _say(f"    {kind['count']:>4} x {kind['kind']}")
    for line in (scan.get("errors") or [])[:5]:
        _say(f"    | {line}")


# ------------------------------------------------------------------------------ CLI


def add_parser(subparsers: Any) -> None:
    """Register `salespulse bench` on the main CLI's argparse subparsers."""
    default_bootstrap = os.environ.get("SALESPULSE_KAFKA_BOOTSTRAP", "127.0.0.1:9092")
    p = subparsers.add_parser(
        "bench",
        help="throughput vs bare aiokafka and stock Faust, and end-to-end latency",
        description="Produce N demo events to fresh topics, time (a) a bare aiokafka consumer, "
        "(b) the salespulse worker, (c) a stock Faust agent and (d) stock Faust with a "
        "windowed-table write on them, measure end-to-end latency at half of (b')'s rate, a "
        "group of two workers and its restarts, and the /metrics render; ends with SPEC "
        "section 7's figures, goal and verdict each.",
    )
    p.add_argument("--events", type=int, default=200_000, help="events to produce (200000)")
    p.add_argument(
        "--stock-events", type=int, default=40_000,
        help="the first K events that the slow contenders read: (c), (d) and (b), whose 50 ms "
        "scrapes of /metrics slow it down to about the stock rates (40000)",
    )
    p.add_argument("--reps", type=int, default=1000, help="sales reps in the demo floor (1000)")
    p.add_argument("--teams", type=int, default=40, help="teams in the demo floor (40)")
    p.add_argument(
        "--bootstrap", default=default_bootstrap,
        help=f"Kafka bootstrap (SALESPULSE_KAFKA_BOOTSTRAP or 127.0.0.1:9092; now {default_bootstrap})",
    )
    p.add_argument("--skip-stock", action="store_true", help="skip (c) and (d)")
    p.add_argument(
        "--skip-group", action="store_true",
        help="skip (g): two workers of one app id (throughput, SIGKILL pause, restart)",
    )
    p.add_argument(
        "--group-session-timeout", type=float, default=10.0,
        help="(g): SALESPULSE_SESSION_TIMEOUT_SECONDS of its workers; a killed worker's "
        "partitions move only after it (10)",
    )
    p.add_argument(
        "--group-load-rate", type=float, default=1000.0,
        help="(g): events/s of live load while a worker is SIGKILLed (1000)",
    )
    p.add_argument(
        "--latency-seconds", type=float, default=20.0,
        help="seconds of probes under load (20); 0 skips the latency phase",
    )
    p.add_argument(
        "--latency-rate", type=float, default=None,
        help="events/s of the latency phase's load (default: half of (b')): the same load in "
             "runs of different code on a box whose speed varies",
    )
    p.add_argument(
        "--metrics-interval", type=float, default=METRICS_POLL,
        help="seconds between /metrics scrapes while (b) is timed (0.05)",
    )
    p.add_argument(
        "--scrape-interval", type=float, default=SCRAPE_INTERVAL,
        help="latency phase: seconds between full /metrics scrapes, as Prometheus's "
        "scrape_interval (1; Prometheus setups use 1-5 s); the probe itself polls "
        f"/metrics?name[]={PROBE_METRIC} every {PROBE_POLL * 1000:.0f} ms",
    )
    p.add_argument("--mix", choices=MIXES, default="demo",
                   help="event mix: demo (the demo floor) or lead-heavy (~40%% of the events "
                   "also travel the lead lane) (demo)")
    p.add_argument("--skip-render", action="store_true",
                   help="skip the /metrics render alone (streams.bench_render)")
    p.add_argument("--tracemalloc", action="store_true",
                   help="also run (m): a worker under tracemalloc on the backlog, and report "
                   "its largest allocation sites (adds a minute or two)")
    p.add_argument("--json", metavar="PATH", help="also write all figures to PATH as JSON")
    p.add_argument(
        "--keep-topics", action="store_true",
        help="keep this run's topics on the broker (deleted by default)",
    )
    p.set_defaults(func=_handle)


def _handle(args: argparse.Namespace) -> int:
    """Exit code: 0 when every contender finished and the latency was measured, else 1."""
    if args.events < 1 or args.stock_events < 1 or args.latency_seconds < 0:
        print("[bench] --events and --stock-events must be >= 1, --latency-seconds >= 0",
              file=sys.stderr)
        return 2
    if args.metrics_interval <= 0 or args.scrape_interval <= 0:
        print("[bench] --metrics-interval and --scrape-interval must be > 0", file=sys.stderr)
        return 2
    try:
        return asyncio.run(bench(args))
    except KeyboardInterrupt:
        return 130

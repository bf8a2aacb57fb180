"""The contenders of `salespulse bench`: (a) a bare aiokafka consumer, (b)/(b') the salespulse
worker as deployed, and (c)/(d) stock Faust; each timed from its first record to its last."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from streams.bench.plumbing import (
    COMMIT_POLL,
    COMMIT_TIMEOUT,
    METRICS_POLL,
    PARTITIONS,
    STALL_TIMEOUT,
    STARTUP_TIMEOUT,
    Health,
    Result,
    RssSampler,
    Run,
    free_port,
    merge_health,
    parse_health,
    scan_log,
    scrape,
    stop_process,
)

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
        f"stock-{mode}", sys.executable, "-m", "streams.bench.contenders.stock_faust",
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

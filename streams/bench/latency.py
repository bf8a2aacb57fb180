"""End-to-end latency under a steady load: a probe event every 100 ms, from its send to the
first observation that shows it on /metrics, in Redis and on the SSE stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp
from aiokafka import AIOKafkaProducer

from streams.bench.plumbing import (
    BACKLOG_TIMEOUT,
    HEADERS,
    LOAD_WARMUP,
    PROBE_DRAIN_CAP,
    PROBE_DRAIN_TIMEOUT,
    PROBE_EVERY,
    PROBE_METRIC,
    PROBE_POLL,
    PROBE_REP,
    PROBE_TEAM,
    Health,
    Run,
    parse_health,
    parse_probe_count,
    quantile,
    scrape,
    stop_process,
)
from streams.bench.workers import Worker
from streams.redis_layout import Layout
from streams.sinks.redis import client as redis_client


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
        "load", sys.executable, "-m", "streams.bench.contenders.load",
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

"""`salespulse bench`: its command line and the run, phase by phase, in one go on the same records."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import sys
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from streams.bench.alone import run_render, run_tracemalloc
from streams.bench.contenders.mixes import MIXES, lead_lane_share
from streams.bench.data import create_topics, delete_run_topics, generate, produce, retarget
from streams.bench.latency import run_latency
from streams.bench.plumbing import (
    METRICS_POLL,
    PARTITIONS,
    PROBE_EVERY,
    PROBE_METRIC,
    PROBE_POLL,
    SCRAPE_INTERVAL,
    Result,
    Run,
    ensure_redis,
    say,
    stop_process,
)
from streams.bench.report import fmt_rate, git_state, print_report
from streams.bench.workers import (
    Worker,
    finish_worker,
    run_bare,
    run_salespulse,
    run_salespulse_quiet,
    run_stock,
    start_worker,
)
from streams.kafka_config import kafka_client_kwargs
from streams.settings import DEFAULT_INPUT_TOPICS, Settings


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
    say(f"[bench] run {runid}: {n:,} events ({args.mix} mix, {args.reps} reps, {args.teams} "
        f"teams), broker {run.bootstrap}, logs in {workdir}")
    try:
        report["redis"] = await ensure_redis(run, settings.redis_url)
        if report["redis"].get("note"):
            say(f"[bench] {report['redis']['note']}")
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
        say(f"[bench] produced {n:,} events to {len(run.topics)} topics x {PARTITIONS} "
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

        say("[bench] (a) bare aiokafka ...")
        results.append(await run_bare(run, n, "a", "(a) bare aiokafka getmany + json.loads"))
        say(f"[bench]     {fmt_rate(results[-1].rate)} events/s {results[-1].note}")

        suffix = f", first {k:,}" if k < n else ""
        if not args.skip_stock:
            say(f"[bench] (c) stock Faust, decode only ({k:,} events) ...")
            results.append(await run_stock(run, "decode", run.stock_topics, k, "c",
                                           f"(c) stock Faust agent, json.loads{suffix}"))
            say(f"[bench]     {fmt_rate(results[-1].rate)} events/s {results[-1].note}")
            say(f"[bench] (d) stock Faust + windowed table write ({k:,} events) ...")
            results.append(await run_stock(run, "table", run.stock_topics, k, "d",
                                           f"(d) stock Faust + tumbling table write{suffix}"))
            say(f"[bench]     {fmt_rate(results[-1].rate)} events/s {results[-1].note}")

        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            say(f"[bench] (b) salespulse worker, /metrics every {args.metrics_interval * 1000:g} ms "
                f"({k:,} events) ...")
            worker = await start_worker(run, "b", run.stock_topics)
            b = await run_salespulse(run, worker, session, k, interval=args.metrics_interval)
            if k < n:
                b.label += f", first {k:,}"
            results.append(b)
            await finish_worker(run, worker, b)
            worker = None
            say(f"[bench]     {fmt_rate(b.rate)} events/s {b.note}")

            if args.tracemalloc:
                say("[bench] (m) a worker with tracemalloc on the same backlog: its largest "
                    "allocation sites ...")
                report["memory"] = await run_tracemalloc(run, session, n)
                say(f"[bench]     {report['memory'].get('note') or 'written to '}"
                    f"{report['memory'].get('path', '')}")

            say("[bench] (b') salespulse worker, timed from the broker, no scrapes ...")
            worker = await start_worker(run, "b2", run.topics)
            b2 = await run_salespulse_quiet(run, worker, session, n)
            results.append(b2)
            say(f"[bench]     {fmt_rate(b2.rate)} events/s {b2.note}")

            base_rate = b2.rate if b2.rate is not None else b.rate
            which = "(b')" if b2.rate is not None else "(b)"
            if args.latency_rate is not None:  # a fixed load: latencies comparable across runs
                base_rate, which = 2 * args.latency_rate, "--latency-rate x 2"
            if args.latency_seconds > 0 and base_rate is not None:
                say(f"[bench] latency on the (b') worker: load {base_rate / 2:,.0f} events/s "
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
                from streams.bench.group import group_ok, run_group

                say(f"[bench] (g) two salespulse workers of one app id, {n:,} events ...")
                g, report["group"] = await run_group(run, session, args, records, settings.partitions)
                del records
                results.append(g)
                if not group_ok(report["group"]):
                    exit_code = 1

        if not args.skip_render:
            say(f"[bench] /metrics render of {args.reps} reps, alone (streams.bench.render) ...")
            report["render"] = await run_render(run, args.reps, args.teams)

        say("[bench] (a') bare aiokafka again (drift of the box during the run) ...")
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
        say(f"[bench] figures written to {args.json}")
    return exit_code




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
                   help="skip the /metrics render alone (streams.bench.render)")
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

"""What `salespulse bench` measures in a child of its own: the /metrics render alone
(:mod:`streams.bench.render`) and (m), a worker's largest allocation sites under tracemalloc."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from typing import Any

import aiohttp

from streams.bench.plumbing import TRACEMALLOC_TIMEOUT, Run, stop_process
from streams.bench.workers import finish_worker, run_salespulse_quiet, start_worker


async def run_render(run: Run, reps: int, teams: int) -> dict[str, Any]:
    """`python -m streams.bench.render --json` in a child (no Kafka, nothing else running): the
    /metrics renderer alone on ``reps`` reps, per kind of scrape."""
    proc = await run.spawn(
        "render", sys.executable, "-m", "streams.bench.render", "--reps", str(reps),
        "--teams", str(teams), "--rounds", "3", "--json",
        env=run.child_env(), stdout=subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        out = await asyncio.wait_for(proc.stdout.read(), 300)
    except TimeoutError:
        await stop_process(proc, 5)
        return {"note": "streams.bench.render did not finish in 300 s"}
    await proc.wait()
    try:
        return dict(json.loads(out.decode().strip().splitlines()[-1]))
    except (ValueError, IndexError):
        return {"note": f"streams.bench.render failed (exit {proc.returncode}, "
                        f"see {run.logs['render']})"}


async def run_tracemalloc(run: Run, session: aiohttp.ClientSession, n: int) -> dict[str, Any]:
    """(m): a fresh worker under tracemalloc (streams.bench.contenders.traced_worker) works
    the run's backlog to durable and serves one /metrics; then it writes its largest allocation
    sites. Its rate and RSS are not figures (tracing slows it several times)."""
    directory = run.workdir / "tracemalloc"
    worker = await start_worker(run, "m", run.topics, module="streams.bench.contenders.traced_worker",
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

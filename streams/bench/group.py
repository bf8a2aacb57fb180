"""`salespulse bench`, phase (g): two workers of one app id ("Many workers, one truth").

Three figures, each from black-box worker processes (``python -m streams.cli worker``), read
from the broker and from ``GET /healthz`` (cheap: no KPI render):

1. **Group throughput.** Two workers of one app id, each on its own web port, start on fresh,
   empty input topics ``bench-<runid>-group.sales.*`` and settle (both serve /healthz, the
   keyed partitions are split between them and restored, for 2 s unchanged). Then both are
   stopped with SIGSTOP, the run's N records are produced to those topics, and both are
   continued with SIGCONT: neither the group's rebalance nor the producer shares the timed
   span, and the workers start on a full backlog as (b') does. The stop lasts a few seconds,
   well inside the session timeout (checked: the assignment must be unchanged afterwards).
   Timed exactly as (b'), with :func:`streams.bench.workers.run_salespulse_quiet`: first bundle in
   ``<app id>-keyed-events`` -> the group's committed offsets (as the broker holds them) of the
   input topics and then of keyed-events at their end offsets.
2. **Pause when a worker is SIGKILLed.** While a load generator produces live demo events at a
   modest rate, one worker is SIGKILLed. Timed: the kill -> the survivor's /healthz lists every
   keyed partition in ``assigned`` (Kafka moved them) and in ``partitions`` (their state is
   restored). The dead worker's partitions move only after the session timeout, which is
   therefore reported with it (``--group-session-timeout``, 10 s by default).
3. **Restart with a large state.** The load stops, the survivor's commits reach the end offsets,
   and its state is counted (``salespulse_state_keys``: window sums (kpi, rep, team, dims) over
   live windows and partitions, plus leads). It is stopped and a new process of the same app id
   started, once after SIGTERM (clean: it leaves the group) and once after SIGKILL (stricter: the
   group waits up to the session timeout for the dead member). Timed from the new process's
   launch to: /healthz first answers; every keyed partition assigned; every one restored; and the
   first /metrics response requested after that (restored values), with its state-key count.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import subprocess
import sys
import time
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from streams.bench.data import create_topics, produce, retarget
from streams.bench.plumbing import PARTITIONS, Result, Run, parse_health, say, scrape, stop_process
from streams.bench.report import fmt_counters, fmt_num, fmt_rate, log_lines
from streams.bench.workers import (
    Worker,
    finish_worker,
    run_salespulse_quiet,
    start_worker,
    wait_commits,
)
from streams.demo.mix import DemoRecord
from streams.settings import DEFAULT_INPUT_TOPICS

HEALTH_POLL = 0.1  # /healthz is cheap (no KPI render): poll it every 100 ms
SETTLE_STABLE = 2.0  # the group counts as settled when its assignment held this long
SETTLE_TIMEOUT = 120.0
KILL_WARMUP = 3.0  # seconds of live load before the kill
RECOVERY_TIMEOUT = 90.0  # beyond the session timeout
#: the group.instance.id of the last two restarts (static membership)
STATIC_INSTANCE = "bench-restart"
#: the restarts of the survivor, in order: (worker key, signal, static membership); g4 and g5
#: are one group member (SALESPULSE_INSTANCE_ID): g4 waits out the killed g3's session as any
#: new member, g5 takes g4's place at once
RESTARTS = (("g3", signal.SIGTERM, False), ("g4", signal.SIGKILL, True), ("g5", signal.SIGKILL, True))
MIN_STATE_KEYS = 100_000  # SPEC §7: "serves again within 10 s for 100,000 state keys"


async def healthz(session: aiohttp.ClientSession, worker: Worker) -> dict[str, Any] | None:
    """The worker's /healthz answer, or None while it does not serve (or has died)."""
    try:
        async with session.get(worker.health_url, timeout=aiohttp.ClientTimeout(total=5)) as resp:
            if resp.status != 200:
                return None
            return await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError):
        return None


def serves_all(health: dict[str, Any] | None, partitions: int) -> tuple[bool, bool]:
    """(every keyed partition assigned, every one assigned and its state restored)."""
    if not health:
        return False, False
    everything = set(range(partitions))
    assigned = set(health.get("assigned") or ()) >= everything
    return assigned, assigned and set(health.get("partitions") or ()) >= everything


def group_settled(healths: list[dict[str, Any] | None], partitions: int) -> bool:
    """Every worker serves, each owns keyed partitions (restored), and together they own each
    keyed partition exactly once."""
    if not all(healths):
        return False
    owned: list[int] = []
    for h in healths:
        assigned = list(h.get("assigned") or ())  # type: ignore[union-attr]
        if not assigned or not set(h.get("partitions") or ()) >= set(assigned):  # type: ignore[union-attr]
            return False
        owned += assigned
    return sorted(owned) == list(range(partitions))


def assignment(healths: list[dict[str, Any] | None]) -> list[list[int]]:
    return [sorted((h or {}).get("assigned") or ()) for h in healths]


async def wait_settled(
    session: aiohttp.ClientSession, workers: list[Worker], partitions: int
) -> tuple[float | None, list[list[int]]]:
    """Seconds from the last launch until the group settled (None: it did not)."""
    began = max(w.launched for w in workers)
    stable_since: float | None = None
    last: list[list[int]] = []
    while time.time() - began < SETTLE_TIMEOUT:
        if any(w.proc.returncode is not None for w in workers):
            return None, last
        healths = [await healthz(session, w) for w in workers]
        now = time.time()
        current = assignment(healths)
        if group_settled(healths, partitions) and current == last:
            stable_since = stable_since or now
            if now - stable_since >= SETTLE_STABLE:
                return now - began, current
        else:
            stable_since = None
        last = current
        await asyncio.sleep(HEALTH_POLL * 5)
    return None, last


async def watch_recovery(
    session: aiohttp.ClientSession, worker: Worker, partitions: int, t_from: float, timeout: float
) -> dict[str, Any]:
    """Poll /healthz from ``t_from``: when it first answered, when every keyed partition was
    assigned to ``worker``, and when every one was restored (seconds after ``t_from``)."""
    out: dict[str, Any] = {"web_s": None, "assigned_s": None, "restored_s": None}
    last: dict[str, Any] | None = None
    while time.time() - t_from < timeout and worker.proc.returncode is None:
        health = await healthz(session, worker)
        t = time.time() - t_from
        if health is not None:
            last = health
            if out["web_s"] is None:
                out["web_s"] = t
            assigned, restored = serves_all(health, partitions)
            if assigned and out["assigned_s"] is None:
                out["assigned_s"] = t
            if restored:
                out["restored_s"] = t
                break
        await asyncio.sleep(HEALTH_POLL)
    out["last_health"] = last
    return out


def _signal(worker: Worker, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        worker.proc.send_signal(sig)


# ------------------------------------------------------------------------------ 1. throughput


async def group_throughput(
    run: Run, session: aiohttp.ClientSession, workers: list[Worker], topics: list[str],
    records: list[DemoRecord], n: int, partitions: int, prefix: str,
) -> Result:
    """SIGSTOP the settled group, produce the backlog, SIGCONT, time it from the broker."""
    before = assignment([await healthz(session, w) for w in workers])
    timing: asyncio.Task[Result] | None = None
    stopped = time.time()
    for w in workers:
        _signal(w, signal.SIGSTOP)
    try:
        sent = await produce(run.bootstrap, retarget(records, prefix), run.client_kw)
        meta = AIOKafkaConsumer(bootstrap_servers=run.bootstrap, **run.client_kw)
        await meta.start()
        try:
            run.input_ends.update(await meta.end_offsets(
                [TopicPartition(t, p) for t in topics for p in range(PARTITIONS)]
            ))
        finally:
            await meta.stop()
        timing = asyncio.create_task(run_salespulse_quiet(
            run, workers, session, n, key="g",
            label="(g) 2 salespulse workers, one app id (to durable)", since=time.time(),
        ))
        await asyncio.sleep(0.2)  # the timer has read the broker's starting point
    finally:
        for w in workers:
            _signal(w, signal.SIGCONT)
    stopped_s = time.time() - stopped
    assert timing is not None
    result = await timing
    d = result.details
    d["produced"] = sent
    d["sigstop_s"] = stopped_s
    d["assigned_before"] = before
    d["assigned_after"] = assignment([await healthz(session, w) for w in workers])
    if d["assigned_after"] != before:
        result.note = "; ".join(filter(None, [
            result.note, f"the assignment changed while timed: {before} -> {d['assigned_after']}"]))
        result.ok = False
    if sent != n:
        result.note = "; ".join(filter(None, [result.note, f"produced {sent:,} of {n:,}"]))
        result.ok = False
    return result


# ------------------------------------------------------------------------------ 2. SIGKILL


async def kill_pause(
    run: Run, session: aiohttp.ClientSession, victim: Worker, survivor: Worker, partitions: int,
    session_timeout: float,
) -> dict[str, Any]:
    """SIGKILL ``victim`` under live load; how long until ``survivor`` serves every partition."""
    before = assignment([await healthz(session, w) for w in (survivor, victim)])
    await asyncio.sleep(KILL_WARMUP)
    t_kill = time.time()
    _signal(victim, signal.SIGKILL)
    seen = await watch_recovery(
        session, survivor, partitions, t_kill, session_timeout + RECOVERY_TIMEOUT
    )
    await victim.proc.wait()
    return {
        "ok": seen["restored_s"] is not None,
        "session_timeout_s": session_timeout,
        "assigned_before": {"survivor": before[0], "killed": before[1]},
        "assigned_s": seen["assigned_s"],
        "restored_s": seen["restored_s"],
        "last_health": seen["last_health"],
    }


# ------------------------------------------------------------------------------ 3. restart


async def restart(
    run: Run, session: aiohttp.ClientSession, old: Worker, key: str, sig: int,
    partitions: int, env: dict[str, str],
) -> tuple[Worker, dict[str, Any]]:
    """Stop ``old`` with ``sig``, count its state first; start ``key`` in its app id and time
    it to serving every partition restored and to the first /metrics after that."""
    body = await scrape(session, old.url)
    keys_before = parse_health(body).state_keys if body is not None else None
    t_sig = time.time()
    if sig == signal.SIGTERM:
        await stop_process(old.proc)  # SIGTERM, and SIGKILL only after 30 s
    else:
        _signal(old, sig)
        await old.proc.wait()
    out: dict[str, Any] = {
        "signal": signal.Signals(sig).name,
        "state_keys_before": keys_before,
        "old_exit_s": time.time() - t_sig,
        "old_exit_code": old.proc.returncode,
    }
    new = await start_worker(run, key, old.topics, app_id=old.app_id, **env)
    seen = await watch_recovery(session, new, partitions, new.launched, RECOVERY_TIMEOUT + 60)
    out.update(web_s=seen["web_s"], assigned_s=seen["assigned_s"], restored_s=seen["restored_s"])
    if seen["restored_s"] is not None:
        body = await scrape(session, new.url)
        t = time.time()
        health = parse_health(body) if body is not None else None
        out["metrics_s"] = t - new.launched if health is not None else None
        out["state_keys_after"] = health.state_keys if health is not None else None
    out["ok"] = out.get("metrics_s") is not None
    return new, out


# ------------------------------------------------------------------------------ the phase


async def run_group(
    run: Run, session: aiohttp.ClientSession, args: argparse.Namespace, records: list[DemoRecord],
    partitions: int,
) -> tuple[Result, dict[str, Any]]:
    """All three figures; returns the table row (g) and the details for the report."""
    n = len(records)
    prefix = f"bench-{run.runid}-group."
    topics = [prefix + t for t in DEFAULT_INPUT_TOPICS]
    session_timeout = args.group_session_timeout
    env = {"SALESPULSE_SESSION_TIMEOUT_SECONDS": f"{session_timeout:g}"}
    app_id = run.name("salespulse-g")
    info: dict[str, Any] = {"app_id": app_id, "topics": topics, "session_timeout_s": session_timeout}
    row = Result("g", "(g) 2 salespulse workers, one app id (to durable)", n)
    await create_topics(run, topics)
    # One after the other: two workers of a fresh app id launched together join the group
    # while Faust is still creating <app id>-keyed-events, and both get none of its partitions
    # (a topic missing from metadata is ignored until the next refresh, minutes later).
    workers = [await start_worker(run, "g1", topics, app_id=app_id, **env)]
    load: asyncio.subprocess.Process | None = None
    try:
        alone = await watch_recovery(session, workers[0], partitions, workers[0].launched,
                                     SETTLE_TIMEOUT)
        info["first_alone_s"] = alone["restored_s"]
        workers.append(await start_worker(run, "g2", topics, app_id=app_id, **env))
        settle_s, split = await wait_settled(session, workers, partitions)
        info["settle_s"], info["assigned"] = settle_s, split
        if settle_s is None:
            row.note = f"the group did not settle in {SETTLE_TIMEOUT:.0f} s: {split}"
            return row, info
        say(f"[bench]     settled in {settle_s:.1f} s, keyed partitions {split}; "
            f"producing {n:,} events while both are stopped ...")
        row = await group_throughput(run, session, workers, topics, records, n, partitions, prefix)
        say(f"[bench]     {fmt_rate(row.rate)} events/s {row.note}")
        if not row.ok:
            return row, info

        say(f"[bench] (g) SIGKILL one worker under a live load of {args.group_load_rate:g} "
            f"events/s (session timeout {session_timeout:g} s) ...")
        load = await run.spawn(
            "load-group", sys.executable, "-m", "streams.bench.contenders.load",
            "--bootstrap", run.bootstrap, "--prefix", prefix,
            "--rate", f"{args.group_load_rate:.1f}",
            "--seconds", f"{KILL_WARMUP + session_timeout + RECOVERY_TIMEOUT:.0f}",
            "--reps", str(args.reps), "--teams", str(args.teams), "--seed", "13",
            "--mix", getattr(args, "mix", "demo"),
            env=run.child_env(), stdout=subprocess.PIPE,
        )
        assert load.stdout is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(load.stdout.readline(), 60)  # "started"
        survivor, victim = workers
        info["kill"] = await kill_pause(run, session, victim, survivor, partitions, session_timeout)
        say(f"[bench]     survivor serves every partition {fmt_num(info['kill']['restored_s'], '.2f')}"
            f" s after the kill")
        await stop_process(load, 10)
        load = None
        t_drain = time.time()
        commits = await wait_commits(run, survivor, t_drain)
        info["drained"] = commits.get("keyed_at") is not None and commits.get("input_at") is not None
        info["drain_s"] = time.time() - t_drain
        info["not_drained"] = {
            tp: o for tp, o in (commits.get("offsets") or {}).items() if o["committed"] != o["end"]
        }

        say("[bench] (g) restart of the survivor with its whole state: SIGTERM, then SIGKILL, "
            "then SIGKILL again with static membership ...")
        restarts = []
        current = survivor
        static = {**env, "SALESPULSE_INSTANCE_ID": STATIC_INSTANCE}
        previous = False  # whether the worker it replaces ran under the static id
        for key, sig, member in RESTARTS:
            current, figures = await restart(run, session, current, key, sig, partitions,
                                             static if member else env)
            figures["static"] = member and previous  # it took the place of a member of its own id
            previous = member
            workers.append(current)
            restarts.append(figures)
            say(f"[bench]     after {figures['signal']}: serves every partition restored "
                f"{fmt_num(figures['restored_s'], '.2f')} s after launch, /metrics "
                f"{fmt_num(figures.get('metrics_s'), '.2f')} s "
                f"({fmt_num(figures.get('state_keys_after'), ',')} state keys)")
        info["restarts"] = restarts
    finally:
        if load is not None:
            await stop_process(load, 10)
        info["workers"] = {w.key: await finish_worker(run, w) for w in workers}
    return row, info


def group_ok(info: dict[str, Any]) -> bool:
    kill = info.get("kill") or {}
    restarts = info.get("restarts") or []
    return (bool(kill.get("ok")) and len(restarts) == len(RESTARTS)
            and all(r.get("ok") for r in restarts))


def print_group(row: Result | None, info: dict[str, Any] | None) -> None:
    """The (g) details after the table: scale-out, the SIGKILL pause, the restarts."""
    if row is None or info is None:
        return
    d = row.details
    say("")
    say(f"(g) two workers of one app id ({info.get('app_id')}), session timeout "
        f"{info['session_timeout_s']:g} s")
    say(f"  first worker alone served every partition {fmt_num(info.get('first_alone_s'), '.1f')} s "
        f"after launch; with the second, the group settled {fmt_num(info.get('settle_s'), '.1f')} s "
        f"after its launch, keyed partitions "
        f"{info.get('assigned')}; backlog produced while both were stopped "
        f"({fmt_num(d.get('sigstop_s'), '.1f')} s), assignment unchanged afterwards: "
        f"{'yes' if d.get('assigned_after') == d.get('assigned_before') else 'NO'}")
    scale = info.get("group_over_one_worker")
    say(f"  throughput: {fmt_rate(row.rate)} events/s to durable; group / one worker (b') = "
        f"{fmt_num(scale, '.2f')}; ingest done +{fmt_num(d.get('ingest_done_s'), '.2f')} s "
        f"({fmt_rate(d.get('rate_until_ingest_done'))} events/s, upper bound)")
    say(f"  check scrapes afterwards: {fmt_counters(d.get('final'))}; peak RSS per worker "
        f"{fmt_num(d.get('rss_peak_mb'), '.0f')} MB")
    kill = info.get("kill")
    if kill:
        say(f"  SIGKILL of one worker under live load: survivor serves every keyed partition "
            f"(assigned {fmt_num(kill.get('assigned_s'), '.2f')} s, restored "
            f"{fmt_num(kill.get('restored_s'), '.2f')} s after the kill; session timeout "
            f"{kill['session_timeout_s']:g} s); it held {kill['assigned_before']['survivor']}, "
            f"the killed one {kill['assigned_before']['killed']}")
    for r in info.get("restarts") or []:
        how = " (static membership: the same SALESPULSE_INSTANCE_ID)" if r.get("static") else ""
        say(f"  restart after {r['signal']}{how} with {fmt_num(r.get('state_keys_before'), ',')} state "
            f"keys (old process gone {r['old_exit_s']:.1f} s after the signal): from launch, "
            f"/healthz {fmt_num(r.get('web_s'), '.2f')} s, all assigned "
            f"{fmt_num(r.get('assigned_s'), '.2f')} s, all restored {fmt_num(r.get('restored_s'), '.2f')}"
            f" s, first /metrics after {fmt_num(r.get('metrics_s'), '.2f')} s "
            f"({fmt_num(r.get('state_keys_after'), ',')} keys)")
        before, after = r.get("state_keys_before"), r.get("state_keys_after")
        if before is not None and after is not None and after > before * 1.01:
            say(f"    WARNING: the new process restored {after:,} keys from the changelog, the "
                f"old one held {before:,}: its state was incomplete (after the rebalance?)")
        if before is not None and before < MIN_STATE_KEYS:
            say(f"    note: fewer than {MIN_STATE_KEYS:,} state keys; SPEC §7's figure needs more")
    for key, life in (info.get("workers") or {}).items():
        log_lines(f"worker {key} stderr (exit {life.get('exit_code')})", life.get("log"))
    if info.get("restarts") and not info.get("drained"):
        say(f"  WARNING: the survivor's commits did not reach the end offsets before the restarts "
            f"(waited {fmt_num(info.get('drain_s'), '.0f')} s; behind: {info.get('not_drained')})")

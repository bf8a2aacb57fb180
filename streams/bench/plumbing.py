"""What every part of `salespulse bench` shares: its constants, its results, a run's directory,
ports and child processes, the Redis it uses, RSS sampling, the worker's health and probe
counts read from /metrics, and the logs' problems."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
import psutil
from aiokafka.structs import TopicPartition

from streams.sinks.redis import client as redis_client

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
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


def say(*parts: Any) -> None:
    """A line of the bench's progress, at once."""
    print(*parts, flush=True)

"""Helpers for tests on real parts: a worker process, a producer, a /metrics reader.

Nothing here stands in for Kafka or Redis: tests talk to the broker and Redis that
`deploy/local.sh` started for this test session (see conftest.py).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
TOPIC_KINDS = ("activities", "leads", "deals", "feedback", "reps")
REDIS_PORT = int(os.environ.get("SALESPULSE_TEST_REDIS_PORT", "26379"))
#: The session's Redis (conftest.py); every worker's keys start with its own app id.
REDIS_URL = f"redis://127.0.0.1:{REDIS_PORT}/0"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


Samples = dict[tuple[str, frozenset], float]


def parse_metrics(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def lag_zero(samples: Samples) -> bool:
    """The worker has read every partition it owns to its end (it reports lag, all 0)."""
    lags = [v for (n, _), v in samples.items() if n == "salespulse_consumer_lag_records"]
    return bool(lags) and not any(lags)


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def eventually(check: Any, timeout: float = 30.0, every: float = 0.25) -> Any:
    """Run ``check()`` until its assertions pass (a worker that does not answer yet counts as
    not passing); return what it returned, or raise its last failure after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
        time.sleep(every)


class Worker:
    """A `salespulse worker` subprocess with its own app id, topics and web port."""

    def __init__(self, bootstrap: str, app_id: str, topics: dict[str, str], log_dir: Path,
                 name: str = "", **env: str) -> None:
        self.bootstrap = bootstrap
        self.app_id = app_id
        self.name = name  # tells apart the logs of several workers of one app id
        self.topics = topics
        self.port = free_port()
        self.log_dir = log_dir
        self.env = {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "SALESPULSE_KAFKA_BOOTSTRAP": bootstrap,
            "SALESPULSE_APP_ID": app_id,
            "SALESPULSE_WEB_PORT": str(self.port),
            "SALESPULSE_WEB_HOST": "127.0.0.1",
            "SALESPULSE_INPUT_TOPICS": ",".join(topics[k] for k in TOPIC_KINDS),
            "SALESPULSE_DLQ_TOPIC": topics["dlq"],
            "SALESPULSE_METRICS_TOPIC": topics["metrics"],
            "SALESPULSE_REDIS_URL": REDIS_URL,
            "SALESPULSE_SESSION_TIMEOUT_SECONDS": "6",
            "SALESPULSE_STATE_FLUSH_SECONDS": "0.2",
            **env,
        }
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self, timeout: float = 90.0, at_least: int | None = None) -> Worker:
        self.starts += 1
        log = open(self.log_dir / f"worker-{self.app_id}{self.name}-{self.starts}.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker"],
            cwd=self.log_dir, env=self.env, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            self.wait_ready(timeout, at_least)
        except BaseException:
            self.kill()  # not left running after the test, whatever the test does next
            raise
        return self

    def wait_ready(self, timeout: float, at_least: int | None = None) -> dict:
        """Ready = serving /healthz with every keyed-events partition assigned (or, with
        ``at_least``, that many of them) and the state of each assigned one in memory.
        Returns the last /healthz answer."""
        deadline = time.monotonic() + timeout
        wanted = at_least if at_least is not None else int(self.env.get("SALESPULSE_PARTITIONS", "4"))
        health: dict = {}
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                health = self.health()
                if len(health["assigned"]) >= wanted and set(health["assigned"]) <= set(health["partitions"]):
                    return health
            except OSError:
                pass
            time.sleep(0.3)
        raise TimeoutError(f"worker not ready after {timeout} s (last /healthz {health}):\n{self.log_tail()}")

    def health(self) -> dict[str, Any]:
        """/healthz: the keyed-events partitions (``assigned``) and the input partitions
        (``inputs``, [topic, partition] pairs) this worker owns."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
            return json.loads(r.read())

    def metrics_text(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as r:
            return r.read().decode()

    def metrics(self) -> Samples:
        return parse_metrics(self.metrics_text())

    def wait_for(self, predicate: Any, timeout: float = 60.0, what: str = "condition") -> Samples:
        deadline = time.monotonic() + timeout
        samples: Samples = {}
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                samples = self.metrics()
                if predicate(samples):
                    return samples
            except OSError:
                pass
            time.sleep(0.25)
        health = {k: v for k, v in samples.items() if k[0].startswith(
            ("salespulse_events", "salespulse_consumer_lag", "salespulse_org_calls_made"))}
        raise TimeoutError(f"timed out waiting for {what}; last counters {health}:\n{self.log_tail()}")

    def until(self, check: Any, timeout: float = 30.0) -> Any:
        """Scrape until ``check(samples)`` passes its assertions; return what it returned.

        Team and organisation values pass through the roll-up stage (a flush, a publication
        and a read behind the rep values), so they are asserted eventually, then exactly."""
        return eventually(lambda: check(self.metrics()), timeout)

    def pause(self) -> None:
        """SIGSTOP: the process stops mid-flight, still a member of its group until the
        session timeout expires (a stalled worker, as seen by the rest of the group)."""
        assert self.proc is not None and self.proc.poll() is None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL: no flush, no commit, no goodbye to the group."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a paused worker could not stop
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()

    def terminate(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> tuple[float, int | None]:
        """Send ``sig`` (a clean stop) and wait up to ``timeout`` s for the process to exit.
        Returns (seconds until it exited, its return code); a process still running then is
        SIGKILLed and reported with return code None."""
        assert self.proc is not None and self.proc.poll() is None
        began = time.monotonic()
        self.proc.send_signal(sig)
        try:
            code: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = None
        return time.monotonic() - began, code

    def log_text(self) -> str:
        path = self.log_dir / f"worker-{self.app_id}{self.name}-{self.starts}.log"
        return path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        path = self.log_dir / f"worker-{self.app_id}{self.name}-{self.starts}.log"
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])


async def committed_offsets(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    """The consumer group's committed offsets, from the broker: {(topic, partition): offset}."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


async def end_offsets(bootstrap: str, topics: Iterable[str], partitions: int = 4) -> dict[tuple[str, int], int]:
    """The end offset (next offset to be written) of partitions 0..``partitions``-1 of ``topics``."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(t, p) for t in topics for p in range(partitions)])
    finally:
        await consumer.stop()
    return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}


def topic_set(prefix: str) -> dict[str, str]:
    names = {kind: f"{prefix}.sales.{kind}" for kind in TOPIC_KINDS}
    names["dlq"] = f"{prefix}.sales.events.dlq"
    names["metrics"] = f"{prefix}.sales.metrics"
    return names


def topic_settings(bootstrap: str, topics: dict[str, str], **overrides: Any) -> Any:
    """The worker's Settings for a :func:`topic_set`, with a fresh app id and alerts topic."""
    from streams.settings import Settings

    fields = {"kafka_bootstrap": bootstrap, "app_id": unique("app"), "dlq_topic": topics["dlq"],
              "metrics_topic": topics["metrics"], "input_topics": topics["activities"],
              "alerts_topic": unique("alerts")}
    return Settings(**{**fields, **overrides})


async def create_topics(bootstrap: str, names: Iterable[str], partitions: int = 4) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names]
        )
    finally:
        await admin.close()


async def produce(bootstrap: str, records: Iterable[tuple], pause_every: int = 0,
                  pause: float = 0.0) -> int:
    """Send (topic, key, value, headers[, partition]) records in order; optionally pace them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks="all")
    await producer.start()
    n = 0
    try:
        for topic, key, val, headers, *partition in records:
            await producer.send(topic, val, key=key, headers=headers or None,
                                partition=partition[0] if partition else None)
            n += 1
            if pause_every and n % pause_every == 0:
                await producer.flush()
                await asyncio.sleep(pause)
        await producer.flush()
    finally:
        await producer.stop()
    return n


def event_time(t: float) -> str:
    """A CloudEvent ``time``: RFC 3339 in UTC, to the millisecond."""
    seconds, millis = divmod(round(t * 1000), 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def cloudevent(etype: str, data: dict[str, Any], *, t: float, eid: str | None = None,
               source: str = "test/integration") -> bytes:
    return json.dumps({
        "specversion": "1.0", "id": eid or uuid.uuid4().hex, "source": source,
        "type": etype, "time": event_time(t), "data": data,
    }).encode()


async def read_topic(bootstrap: str, topic: str, expect: int | None = None,
                     timeout: float = 30.0) -> list:
    """Every record of ``topic`` from the beginning (no consumer group): until ``expect``
    records arrived, or, without ``expect``, until a poll of 2 s brings nothing."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    out: list = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (expect is None or len(out) < expect):
            batch = await consumer.getmany(timeout_ms=2000 if expect is None else 500)
            if not batch and expect is None:
                break
            for recs in batch.values():
                out.extend(recs)
    finally:
        await consumer.stop()
    return out

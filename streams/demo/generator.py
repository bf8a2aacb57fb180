"""Produce the demo sales floor to Kafka: paced for the live demo, or flat out for benchmarks.

`salespulse demo` (registered with `add_parser`) runs `run()`: it paces at about `--rate`
events/s in small bursts so the event times (stamped at generation) track the wall clock, and
prints progress to stderr so someone watching the terminal sees that data flows. `produce_all()`
pushes a finite, pre-generated batch as fast as the broker takes it, for the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError

from streams.demo.mix import DemoRecord, SalesFloor
from streams.kafka_config import kafka_client_kwargs
from streams.settings import Settings

# CloudEvents Kafka binding, structured mode: the content-type header names the event format.
HEADERS = [("content-type", b"application/cloudevents+json")]
MIN_SLEEP = 0.01  # pacing granularity: send what is due, then sleep at least this long


class _Progress:
    """Counts sends and delivery failures; prints a line to stderr every `every` seconds."""

    def __init__(self, every: float) -> None:
        self.every = every
        self.sent = 0
        self.failed = 0
        self.last_error: BaseException | None = None
        self.last: DemoRecord | None = None
        self.started = self._mark_t = time.monotonic()
        self._mark_n = 0

    def delivered(self, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled() and fut.exception() is not None:
            self.failed += 1
            self.last_error = fut.exception()

    def maybe_report(self) -> None:
        now = time.monotonic()
        if self.every > 0 and now - self._mark_t >= self.every:
            self._report(now)

    def _report(self, now: float) -> None:
        rate = (self.sent - self._mark_n) / max(now - self._mark_t, 1e-9)
        line = f"[demo] {self.sent:,} events sent ({rate:,.1f}/s)"
        if self.last is not None:
            # decoding one event per report is cheap, and keeps DemoRecord down to 3 fields
            etype = orjson.loads(self.last.value).get("type", "?")
            line += f"; last: {etype} {self.last.key.decode(errors='replace')}"
        if self.failed:
            line += f"; {self.failed:,} failed (last error: {self.last_error!r})"
        print(line, file=sys.stderr, flush=True)
        self._mark_t, self._mark_n = now, self.sent

    def final(self) -> None:
        elapsed = time.monotonic() - self.started
        rate = self.sent / max(elapsed, 1e-9)
        failed = f", {self.failed:,} failed" if self.failed else ""
        print(
            f"[demo] done: {self.sent:,} events sent in {elapsed:,.1f} s ({rate:,.1f}/s){failed}",
            file=sys.stderr,
            flush=True,
        )


async def _started(producer: AIOKafkaProducer) -> AIOKafkaProducer:
    """Start, or close again on failure (an unclosed producer leaks its connections)."""
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise
    return producer


async def _send(producer: AIOKafkaProducer, rec: DemoRecord, progress: _Progress) -> None:
    fut = await producer.send(rec.topic, rec.value, key=rec.key, headers=HEADERS)
    fut.add_done_callback(progress.delivered)
    progress.sent += 1
    progress.last = rec


async def _paced(
    producer: AIOKafkaProducer, records: Iterator[DemoRecord], rate: float, progress: _Progress
) -> None:
    """Send about `rate` events/s: each wake-up sends whatever is due by now, then sleeps until
    the next one is due (at least MIN_SLEEP, so sends go out in small bursts). After a stall of
    more than a second the schedule restarts instead of bursting the backlog out at once."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    base = 0  # events sent when t0 was set
    while True:
        now = loop.time()
        due = int((now - t0) * rate) + 1 - (progress.sent - base)
        if due > rate + 1:
            t0, base, due = now, progress.sent, 1
        for _ in range(max(due, 0)):
            rec = next(records, None)
            if rec is None:
                return
            await _send(producer, rec, progress)
        progress.maybe_report()
        next_at = t0 + (progress.sent - base) / rate
        await asyncio.sleep(max(MIN_SLEEP, next_at - loop.time()))


async def _flat_out(
    producer: AIOKafkaProducer, records: Iterator[DemoRecord], progress: _Progress
) -> None:
    # producer.send() waits while a partition's batch is full: that is the back-pressure
    for rec in records:
        await _send(producer, rec, progress)
        if progress.sent % 1024 == 0:
            progress.maybe_report()


async def run(
    settings: Settings,
    *,
    reps: int,
    teams: int,
    rate: float,
    count: int | None,
    seed: int,
    progress_every: float = 5.0,
) -> int:
    """Produce the demo floor until `count` events (None: until cancelled); returns events sent.

    `rate` > 0: paced, events stamped with the wall clock as they are made (live mode).
    `rate` <= 0: as fast as possible, with bulk-mode event times (spread over the recent past,
    so lead response times and windows still look real). Cancellation (Ctrl-C, SIGTERM) is the
    normal way to stop an endless run: it flushes what was sent and returns the count.
    """
    floor = SalesFloor(reps=reps, teams=teams, seed=seed)
    live = rate > 0
    records = iter(floor.events(count, rate=rate if live else None))
    producer = await _started(
        AIOKafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, linger_ms=5, **kafka_client_kwargs(settings)
        )
    )
    progress = _Progress(progress_every)
    mode = f"{rate:,.1f} events/s" if live else "as fast as possible"
    total = f"{count:,} events" if count is not None else "until stopped"
    print(
        f"[demo] producing to {settings.kafka_bootstrap}: {reps:,} reps in {teams} teams, "
        f"{mode}, {total}",
        file=sys.stderr,
        flush=True,
    )
    try:
        if live:
            await _paced(producer, records, rate, progress)
        else:
            await _flat_out(producer, records, progress)
    except asyncio.CancelledError:
        pass  # stop requested: fall through to flush
    finally:
        await producer.stop()  # flushes pending batches
        progress.final()
    return progress.sent


async def produce_all(
    bootstrap: str, records: Iterable[DemoRecord], *, chunk: int = 20_000, **client_kwargs: Any
) -> int:
    """Produce a finite batch as fast as possible; returns how many were acknowledged.

    Sends without awaiting each delivery and awaits deliveries a chunk at a time, so a broker
    error surfaces (raises) within one chunk and memory stays bounded. `acks="all"` because
    benchmark input must be complete. Extra keyword arguments go to the producer (e.g.
    `**kafka_client_kwargs(settings)`).
    """
    kwargs: dict[str, Any] = {"linger_ms": 20, "max_batch_size": 256 * 1024, "acks": "all"}
    kwargs.update(client_kwargs)
    producer = await _started(AIOKafkaProducer(bootstrap_servers=bootstrap, **kwargs))
    done = 0
    try:
        futures: list[asyncio.Future[Any]] = []
        for rec in records:
            futures.append(await producer.send(rec.topic, rec.value, key=rec.key, headers=HEADERS))
            if len(futures) >= chunk:
                await asyncio.gather(*futures)
                done += len(futures)
                futures.clear()
        await producer.flush()
        await asyncio.gather(*futures)
        done += len(futures)
    finally:
        await producer.stop()
    return done


# ---------------------------------------------------------------------- CLI


def add_parser(subparsers: Any) -> None:
    """Register `salespulse demo` on the main CLI's argparse subparsers."""
    p = subparsers.add_parser(
        "demo",
        help="produce a synthetic sales floor's events to Kafka",
        description="Produce realistic sales activity CloudEvents (SPEC section 2) to the input "
        "topics, paced at --rate events/s, with progress on stderr.",
    )
    p.add_argument("--reps", type=int, default=1000, help="number of sales reps (1000)")
    p.add_argument("--teams", type=int, default=40, help="number of teams, reps round robin (40)")
    p.add_argument(
        "--rate",
        type=float,
        default=200.0,
        help="events per second (200); <= 0: as fast as possible",
    )
    p.add_argument("--count", type=int, default=None, help="stop after N events (default: never)")
    p.add_argument("--seed", type=int, default=7, help="random seed: same seed, same story (7)")
    p.add_argument(
        "--progress-every",
        type=float,
        default=5.0,
        help="seconds between progress lines on stderr (5); 0: none",
    )
    p.set_defaults(func=_handle)


async def _main(args: argparse.Namespace) -> int:
    # docker compose stop sends SIGTERM: treat it like Ctrl-C so pending events are flushed
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError):
        loop.add_signal_handler(signal.SIGTERM, task.cancel)  # type: ignore[union-attr]
    return await run(
        Settings(),
        reps=args.reps,
        teams=args.teams,
        rate=args.rate,
        count=args.count,
        seed=args.seed,
        progress_every=args.progress_every,
    )


def _handle(args: argparse.Namespace) -> int:
    """Exit code: 0 when done or stopped, 1 when Kafka could not be reached, 130 on a 2nd Ctrl-C."""
    try:
        asyncio.run(_main(args))
    except KeyboardInterrupt:
        return 130
    except (KafkaConnectionError, OSError) as exc:
        print(f"[demo] Kafka at {Settings().kafka_bootstrap} unreachable: {exc}", file=sys.stderr)
        return 1
    return 0

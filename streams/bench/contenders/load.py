"""Steady background load for the latency phase of `salespulse bench`.

Produces the demo sales floor (live mode: every event stamped with the clock when it is made) at
a target rate to the benchmark's input topics. It runs in its own process so that generating and
sending tens of thousands of events per second does not delay the parent's probes and /metrics
scrapes, which are what the latency figure measures.

Protocol with the parent: one line ``started`` on stdout once the producer is connected, then
(after ``--seconds``) one JSON line with what was actually sent. The achieved rate can fall
short of the target on a busy box; the parent reports both.

Run: ``python -m streams.bench.contenders.load --bootstrap H:P --prefix bench-x. --rate 20000
--seconds 23``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.bench.contenders.mixes import MIXES, floor
from streams.bench.plumbing import HEADERS
from streams.kafka_config import kafka_client_kwargs
from streams.settings import Settings

TICK = 0.005  # pacing granularity: send what is due, then sleep at least this long


async def run(args: argparse.Namespace) -> dict[str, Any]:
    """Send at ``args.rate`` for ``args.seconds``; returns the counts for the parent."""
    records = floor(args.mix, args.reps, args.teams, args.seed).events(None, rate=args.rate)
    prefix = args.prefix
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap, linger_ms=5, **kafka_client_kwargs(Settings())
    )
    await producer.start()
    failed = 0

    def delivered(fut: asyncio.Future[Any]) -> None:
        nonlocal failed
        if not fut.cancelled() and fut.exception() is not None:
            failed += 1

    sent = 0
    max_behind = 0
    try:
        print("started", flush=True)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        end = t0 + args.seconds
        while True:
            now = loop.time()
            if now >= end:
                break
            due = int((now - t0) * args.rate) - sent
            max_behind = max(max_behind, due)
            for _ in range(max(due, 0)):
                rec = next(records)
                fut = await producer.send(prefix + rec.topic, rec.value, key=rec.key, headers=HEADERS)
                fut.add_done_callback(delivered)
                sent += 1
            next_at = t0 + (sent + 1) / args.rate
            await asyncio.sleep(max(TICK, next_at - loop.time()))
        elapsed = loop.time() - t0
        await producer.flush()
    finally:
        await producer.stop()
    return {
        "target_rate": args.rate,
        "sent": sent,
        "failed": failed,
        "seconds": elapsed,
        "rate": sent / elapsed if elapsed > 0 else 0.0,
        # largest backlog (events due but not yet sent) seen at a wake-up: how far the
        # producer fell behind its schedule when the box was busy
        "max_behind": max_behind,
        "finished_at": time.time(),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--prefix", required=True, help="prepended to the demo topic names")
    p.add_argument("--rate", type=float, required=True, help="events per second")
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--reps", type=int, default=1000)
    p.add_argument("--teams", type=int, default=40)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--mix", choices=MIXES, default="demo", help="event mix (demo)")
    args = p.parse_args(argv)
    if args.rate <= 0 or args.seconds <= 0:
        p.error("--rate and --seconds must be > 0")
    result = asyncio.run(run(args))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

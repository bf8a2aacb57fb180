"""The bench's records: the demo floor's events (or a mix's), produced once to fresh topics."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.bench.contenders.mixes import floor as mix_floor
from streams.bench.plumbing import HEADERS, PARTITIONS, Run
from streams.demo.mix import DemoRecord


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

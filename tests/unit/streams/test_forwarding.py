"""Forwarding safety without a broker: bundle size bounds and the delivery guard."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

from metrics.events import BUNDLE_DECODER, LANE_KPI, Validator
from streams.delivery import DeliveryGuard
from streams.ingest import MAX_BUNDLE_BYTES, MAX_BUNDLE_EVENTS, IngestStage


def _event(i: int, now: float):
    value = json.dumps({
        "specversion": "1.0", "id": uuid.uuid4().hex, "source": "test/unit", "type": "call.completed",
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - 60)),
        "data": {"rep_id": f"rep-{i % 50}", "team_id": "team-a", "direction": "outbound",
                 "outcome": "connected", "talk_seconds": 30, "wrap_seconds": 5},
    }).encode()
    return Validator().decode(value, i, now)


def _stage() -> IngestStage:
    async def send(*args, **kwargs):  # pragma: no cover - not called
        raise AssertionError

    return IngestStage(Validator(), send, keyed_topic="k", partitions=4, dlq_topic="dlq")


def test_bundles_are_bounded_in_bytes_and_keep_offset_order() -> None:
    now = time.time()
    events = [_event(i, now) for i in range(3 * MAX_BUNDLE_EVENTS + 17)]
    stage = _stage()
    values = stage.bundles("sales.activities", 2, events, LANE_KPI)
    assert len(values) > 3  # 4096 such events encode to well over MAX_BUNDLE_BYTES
    assert all(len(v) <= MAX_BUNDLE_BYTES for v in values)
    decoded = [BUNDLE_DECODER.decode(v) for v in values]
    assert all(b.topic == "sales.activities" and b.partition == 2 for b in decoded)
    offsets = [e.offset for b in decoded for e in b.events]
    assert offsets == [e.offset for e in events]  # every event once, in order
    # a small batch is still one bundle
    assert len(stage.bundles("sales.activities", 2, events[:10], LANE_KPI)) == 1


def test_guard_sees_a_failed_send_before_its_callback_runs() -> None:
    async def scenario() -> None:
        failures: list[BaseException] = []
        guard = DeliveryGuard(failures.append)
        loop = asyncio.get_running_loop()
        ok, bad = loop.create_future(), loop.create_future()
        guard.watch(ok)
        guard.watch(bad)
        ok.set_result(None)
        bad.set_exception(RuntimeError("refused"))
        # the done callbacks are only scheduled: check() must still see the failure
        assert isinstance(guard.check(), RuntimeError)
        assert len(failures) == 1
        await asyncio.sleep(0)  # callbacks run: still reported once
        assert len(failures) == 1 and guard.inflight == 0

    asyncio.run(scenario())

"""/board in a real headless Chromium: the page renders the organisation's and the teams' KPIs
from the worker's stream, and a value on it changes within 2 s after events are produced."""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import pytest

from tests.integration.browser import Chromium
from tests.integration.harness import Worker, cloudevent, create_topics, produce, topic_set, unique
from tests.integration.oracle import (
    TEAMS,
    Oracle,
    activity_stream,
    assert_matches,
    recent_today,
    roster_record,
)

pytestmark = pytest.mark.integration

CHANGE_WITHIN = 2.0


def text(element_id: str) -> str:
    return f"document.getElementById({element_id!r}).textContent"


def test_the_board_shows_the_kpis_and_changes_within_two_seconds(bootstrap: str, log_dir: Path) -> None:
    topics = topic_set(unique("board"))
    asyncio.run(create_topics(bootstrap, topics.values()))
    worker = Worker(bootstrap, unique("app"), topics, log_dir).start()
    try:
        earliest, now = recent_today()
        oracle = Oracle()
        stream = activity_stream(random.Random(8), topics["activities"], 800, oracle, earliest, now)
        asyncio.run(produce(bootstrap, [roster_record(topics["reps"], earliest), *stream]))
        worker.until(lambda s: assert_matches(s, oracle))
        asyncio.run(_browse(worker, topics, oracle, bootstrap, log_dir))
    finally:
        worker.stop()


async def _browse(worker: Worker, topics: dict, oracle: Oracle, bootstrap: str, log_dir: Path) -> None:
    async with Chromium(log_dir / "chromium") as browser:
        await browser.goto(f"http://127.0.0.1:{worker.port}/board")
        made = f"{oracle.v[('org', 'calls_made')]:,.0f}"
        await browser.until(f"{text('org-calls_made')} === {made!r}")
        assert await browser.eval(text("org-emails_sent")) == f"{oracle.v[('org', 'emails_sent')]:,.0f}"
        assert await browser.eval(text("org-meetings_scheduled")) == \
            f"{oracle.v[('org', 'meetings_scheduled')]:,.0f}"
        assert await browser.eval(text("status")) == "live"
        await browser.until("document.querySelectorAll('#teams tbody tr').length === 2", timeout=5)
        rows = await browser.eval(
            "[...document.querySelectorAll('#teams tbody tr')].map(r => [...r.cells].map(c => c.textContent))")
        assert {r[0]: r[1] for r in rows} == {
            t: f"{oracle.v[('team', t, 'calls_made')]:,.0f}" for t in set(TEAMS.values())}
        await browser.until("document.querySelectorAll('#top tbody tr td').length > 1", timeout=5)
        await browser.screenshot(log_dir / "board.png")

        # Ten new calls: the organisation's tile shows them within 2 s of being produced.
        calls = [(topics["activities"], None, cloudevent(
            "call.completed", {"rep_id": "rep-1", "team_id": TEAMS["rep-1"], "direction": "outbound",
                               "outcome": "connected", "talk_seconds": 30}, t=time.time()), [])
            for _ in range(10)]
        await produce(bootstrap, calls)
        produced = time.monotonic()
        after = f"{oracle.v[('org', 'calls_made')] + 10:,.0f}"
        await browser.until(f"{text('org-calls_made')} === {after!r}", timeout=10)
        took = time.monotonic() - produced
        print(f"board: new calls visible {took:.2f} s after they were produced")
        assert took < CHANGE_WITHIN, f"the board changed {took:.2f} s after the events were produced"

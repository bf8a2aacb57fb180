"""A stop never hangs: a task that outlives its cancel is abandoned, a stuck stop exits hard.

CI saw a crashed worker (a refused forward) stop its every service and then sit for 45 s
without exiting: mode cancels the app's tasks and waits for them without a bound, so one task
that loses its ``CancelledError`` holds the process for good.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
import time

import pytest

from streams import app as app_module
from streams.app import Service
from streams.settings import Settings
from streams.stop_watchdog import EXIT_HUNG


def test_a_task_that_swallows_its_cancel_does_not_hold_the_stop(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(app_module, "TASKS_STOP_SECONDS", 0.3)

    released = False

    async def stubborn() -> None:
        while not released:
            try:
                await asyncio.sleep(0.05)
            except asyncio.CancelledError:
                continue  # as a library that loses the cancel would

    async def obedient() -> None:
        await asyncio.sleep(3600)

    async def scenario() -> float:
        nonlocal released
        service = Service(Settings(app_id="stop-test", redis_url=""))
        app = service.app
        held = app.add_future(stubborn())
        fine = app.add_future(obedient())
        await asyncio.sleep(0)
        try:
            began = time.monotonic()
            # unbounded in mode: this wait is what failed (timed out) before the fix
            await asyncio.wait_for(app._stop_futures(), timeout=5)
            took = time.monotonic() - began
            assert fine.done()
            assert not held.done()  # abandoned, not waited for
            assert not app._futures
        finally:
            released = True
            await held
        return took

    with caplog.at_level(logging.ERROR, logger="streams.app"):
        took = asyncio.run(scenario())
    assert 0.25 < took < 2.0
    assert "1 task(s) still running" in caplog.text
    assert "in stubborn" in caplog.text  # named, with where it waits


def test_a_stop_that_hangs_exits_hard_naming_what_held_it() -> None:
    script = textwrap.dedent("""
        import asyncio, logging
        from streams.stop_watchdog import StopWatchdog

        async def stuck_forever():
            await asyncio.Event().wait()

        async def main():
            logging.basicConfig()
            task = asyncio.ensure_future(stuck_forever())
            StopWatchdog(asyncio.get_running_loop(), 0.5).arm()
            await task

        asyncio.run(main())
    """)
    began = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == EXIT_HUNG, done.stderr
    assert time.monotonic() - began < 20
    assert "did not stop within" in done.stderr
    assert "stuck_forever" in done.stderr  # the pending task, with its stack


def test_a_stop_that_ends_in_time_exits_normally_with_the_watchdog_armed() -> None:
    script = textwrap.dedent("""
        import asyncio
        from streams.stop_watchdog import StopWatchdog

        async def main():
            StopWatchdog(asyncio.get_running_loop(), 5.0).arm()
            await asyncio.sleep(0.1)

        asyncio.run(main())
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 0, done.stderr  # a daemon timer does not keep the process alive

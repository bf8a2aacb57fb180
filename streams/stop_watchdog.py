"""A stop that hangs ends anyway: the worker exits hard, naming what held it.

mode stops a service by cancelling its tasks and then waiting for them without a bound: one
task that outlives its cancel (a library swallowing the ``CancelledError``) holds the worker
on the way down forever, neither serving nor exiting, and a supervisor that waits for the exit
(systemd, Kubernetes, a test) waits too. Once a stop began, a daemon thread gives it
``grace`` seconds; past them it logs every asyncio task still pending with its stack and
every thread's, and ends the process with :data:`EXIT_HUNG`.

A hard exit loses nothing: offsets are committed only after what they cover is durable
(:mod:`streams.transport`), so the next start replays what was not committed, exactly.
"""

from __future__ import annotations

import asyncio
import faulthandler
import io
import logging
import os
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger(__name__)

EXIT_HUNG = 70  # EX_SOFTWARE: the stop did not finish
#: How long the app's tasks have to end after their cancel before they are abandoned (seconds)
TASKS_STOP_SECONDS = 5.0
#: A stop's own bound (the settle of held records, ``stop_timeout_seconds``) plus this much
#: for the rest: the producer's flush, leaving the group, closing clients (seconds).
STOP_MARGIN_SECONDS = 20.0


class StopWatchdog:
    def __init__(self, loop: asyncio.AbstractEventLoop, grace: float) -> None:
        self.loop = loop
        self.grace = grace
        self._timer: threading.Timer | None = None

    def arm(self) -> None:
        """The stop began: from now on it has ``grace`` seconds (arming again changes nothing)."""
        if self._timer is None:
            self._timer = threading.Timer(self.grace, self._fire)
            self._timer.daemon = True
            self._timer.start()

    def pending_tasks(self) -> str:
        """Every task of the loop not done yet, each with its stack (read from this thread:
        the loop is stuck, or nearly so; a set changed meanwhile is read again)."""
        for _ in range(5):
            try:
                tasks = [t for t in list(asyncio.all_tasks(self.loop)) if not t.done()]
                break
            except RuntimeError:  # the task set changed while it was copied
                continue
        else:
            return "(the task set kept changing)"
        return describe_tasks(tasks)

    def _fire(self) -> None:
        log.critical("the worker did not stop within %.0f s: exiting (code %d); the next start "
                     "replays from the last commit. Tasks still pending:\n%s",
                     self.grace, EXIT_HUNG, self.pending_tasks())
        for handler in logging.getLogger().handlers:
            handler.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(EXIT_HUNG)


def describe_tasks(tasks: Iterable[asyncio.Future[Any]]) -> str:
    """Each task (or future) with where it waits: its coroutine and what that awaits, down to
    the innermost await (through tasks awaited in turn: mode runs a service's coroutine in a
    task of its own, so the outer task's stack alone shows only mode's wrapper)."""
    out = io.StringIO()
    for task in tasks:
        out.write(f"--- {task!r}\n")
        try:
            for line in _awaits(task):
                out.write(f"    {line}\n")
        except Exception as exc:  # diagnostics must not fail the stop
            out.write(f"    (stack unavailable: {exc!r})\n")
    return out.getvalue()


def _awaits(awaitable: Any, depth: int = 0) -> Iterator[str]:
    if depth > 40:
        return
    coro = awaitable.get_coro() if isinstance(awaitable, asyncio.Task) else awaitable
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            yield f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"
        inner = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        if isinstance(inner, asyncio.Task):
            yield from _awaits(inner, depth + 1)
            return
        if isinstance(inner, asyncio.Future):
            yield f"waits for {inner!r}"
            return
        coro = inner

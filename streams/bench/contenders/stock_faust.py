"""Stock Faust contenders of `salespulse bench`: (c) decode only, (d) decode + a windowed-table write.

A deliberately plain Faust app, the way the Faust documentation writes one: one message per
Kafka record, `json.loads` per event and, in ``table`` mode, one write per event to
``app.Table('counts', default=int).tumbling(60, expires=3600)``. It is the yardstick the
salespulse worker is compared with, so it gets no tuning beyond what any deployment would set
(loglevel INFO, because a WARN worker turns the root logger to DEBUG: shared notes §3).

Configured by environment (the parent, :mod:`streams.bench.workers`, sets all of it)::

    BENCH_APP_ID     app id = consumer group (fresh per run)
    BENCH_TOPICS     comma-separated input topics
    BENCH_BOOTSTRAP  host:port[,host:port]
    BENCH_MODE       "decode" or "table"
    BENCH_EXPECT     records to count before reporting completion
    BENCH_PROGRESS   JSON file the progress is written to (atomically replaced)
    BENCH_DATADIR    Faust's data dir (kept out of the work tree)

Run: ``python -m streams.bench.contenders.stock_faust worker -l info --without-web``.

The progress file holds wall-clock times (``time.time()``), taken in this process, of the first
record the agent saw, of the ``BENCH_EXPECT``-th one, and (table mode) of the moment after
which ``app.producer.flush()`` returned, i.e. the changelog writes were delivered. The parent
polls it: its own polling delay then does not blur the measurement.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import faust

MODES = ("decode", "table")


class Progress:
    """What the parent needs to time this contender; written as one small JSON file."""

    def __init__(self, path: Path, expect: int, mode: str) -> None:
        self.path = path
        self.expect = expect
        self.mode = mode
        self.count = 0
        self.first: float | None = None
        self.last: float | None = None
        self.flushed: float | None = None

    def write(self) -> None:
        """Replace the file atomically so that the parent never reads half a document."""
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(
            json.dumps(
                {
                    "mode": self.mode,
                    "expect": self.expect,
                    "count": self.count,
                    "first": self.first,
                    "last": self.last,
                    "flushed": self.flushed,
                    "pid": os.getpid(),
                }
            )
        )
        os.replace(tmp, self.path)


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"stock_faust: {name} is not set (this module is run by `salespulse bench`)")
    return value


def build_app() -> tuple[faust.App, Progress]:
    """The app and its progress record, from the BENCH_* environment."""
    mode = _env("BENCH_MODE")
    if mode not in MODES:
        raise SystemExit(f"stock_faust: BENCH_MODE must be one of {MODES}, got {mode!r}")
    expect = int(_env("BENCH_EXPECT"))
    progress = Progress(Path(_env("BENCH_PROGRESS")), expect, mode)
    topics = [t.strip() for t in _env("BENCH_TOPICS").split(",") if t.strip()]
    app = faust.App(
        _env("BENCH_APP_ID"),
        broker=[f"kafka://{host}" for host in _env("BENCH_BOOTSTRAP").split(",")],
        store="memory://",
        datadir=_env("BENCH_DATADIR"),
        consumer_auto_offset_reset="earliest",
        # The input topics have 4 partitions; the changelog of a table must have as many
        # (a table write goes to the changelog partition numbered like the source partition).
        topic_partitions=4,
        topic_replication_factor=1,
        web_enabled=False,
    )
    source = app.topic(*topics, key_serializer="raw", value_serializer="raw")
    table: Any = None
    if mode == "table":
        table = app.Table("counts", default=int).tumbling(60, expires=3600)

    @app.agent(source, name="decode")
    async def decode(stream: Any) -> None:
        loads = json.loads
        async for value in stream:
            if progress.count == 0:
                progress.first = time.time()
            event = loads(value)
            if table is not None:
                data = event.get("data") or {}
                # every event writes once; the few without a rep (eNPS, spend) count per team
                table[data.get("rep_id") or data.get("team_id") or "-"] += 1
            progress.count += 1
            if progress.count == expect:
                progress.last = time.time()
                progress.write()
                if table is not None:
                    await app.producer.flush()
                    progress.flushed = time.time()
                    progress.write()

    @app.timer(1.0, name="progress")
    async def report() -> None:
        if progress.last is None:
            progress.write()

    return app, progress


def main() -> None:
    """Start a Faust worker for the configured app (argv as for the `faust` command)."""
    app, progress = build_app()
    progress.write()  # the parent sees the worker is alive before the first record
    if len(sys.argv) <= 1:
        sys.argv[1:] = ["worker", "-l", "info", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()

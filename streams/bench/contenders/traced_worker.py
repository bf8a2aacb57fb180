"""A salespulse worker with tracemalloc on, for the memory figures of `salespulse bench
--tracemalloc` (issue 13 item 3: the largest structures of a worker, measured).

``SALESPULSE_BENCH_TRACEMALLOC=<dir>``: tracing starts before the worker is imported, and a
thread waits for the file ``<dir>/snapshot.request``; when it appears the thread takes a snapshot
and writes ``<dir>/tracemalloc.json`` (and a text copy, ``tracemalloc.txt``): the traced total
and peak, and the top allocation sites by file and line and by file. The worker itself is
``python -m streams.cli worker`` unchanged; tracing slows it several times, so its rates and
RSS are not the benchmark's.

Run: ``SALESPULSE_BENCH_TRACEMALLOC=/tmp/m python -m streams.bench.contenders.traced_worker``.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

TOP = 20
ROOT = str(Path(__file__).resolve().parents[3]) + os.sep


def _site(path: str) -> str:
    """A file path, shortened to the repository or to site-packages."""
    if path.startswith(ROOT):
        return path[len(ROOT):]
    marker = "site-packages" + os.sep
    return path[path.index(marker) + len(marker):] if marker in path else path


def summary(snapshot: tracemalloc.Snapshot, top: int = TOP) -> dict[str, Any]:
    """Traced memory now and at its peak, and the largest allocation sites."""
    snapshot = snapshot.filter_traces((
        tracemalloc.Filter(False, tracemalloc.__file__),
        tracemalloc.Filter(False, __file__),
    ))
    current, peak = tracemalloc.get_traced_memory()

    def rows(key: str, n: int) -> list[dict[str, Any]]:
        out = []
        for stat in snapshot.statistics(key)[:n]:
            frame = stat.traceback[0]
            out.append({
                "site": f"{_site(frame.filename)}:{frame.lineno}" if key == "lineno"
                else _site(frame.filename),
                "mb": stat.size / 2**20,
                "blocks": stat.count,
            })
        return out

    return {
        "traced_mb": current / 2**20,
        "traced_peak_mb": peak / 2**20,
        "by_line": rows("lineno", top),
        "by_file": rows("filename", top // 2),
    }


def as_text(figures: dict[str, Any]) -> str:
    lines = [f"traced {figures['traced_mb']:.1f} MB now, peak {figures['traced_peak_mb']:.1f} MB",
             f"a full gc.collect() then freed {figures.get('garbage_mb', 0.0):.1f} MB "
             f"({figures.get('garbage_objects', 0):,} unreachable objects)",
             "", "top allocation sites by line:"]
    lines += [f"  {r['mb']:8.2f} MB  {r['blocks']:>9,} blocks  {r['site']}" for r in figures["by_line"]]
    lines += ["", "by file:"]
    lines += [f"  {r['mb']:8.2f} MB  {r['blocks']:>9,} blocks  {r['site']}" for r in figures["by_file"]]
    return "\n".join(lines) + "\n"


def _watch(directory: Path) -> None:
    request = directory / "snapshot.request"
    while not request.exists():
        time.sleep(0.2)
    figures = summary(tracemalloc.take_snapshot())
    # what only the cycle collector frees (the worker collects the old generation rarely,
    # streams.cli): traced memory before and after a full collection
    before = tracemalloc.get_traced_memory()[0]
    figures["garbage_objects"] = gc.collect()
    figures["garbage_mb"] = (before - tracemalloc.get_traced_memory()[0]) / 2**20
    (directory / "tracemalloc.txt").write_text(as_text(figures))
    tmp = directory / "tracemalloc.json.tmp"
    tmp.write_text(json.dumps(figures, indent=2))
    tmp.rename(directory / "tracemalloc.json")


def main() -> int:
    directory = Path(os.environ["SALESPULSE_BENCH_TRACEMALLOC"])
    directory.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(1)
    threading.Thread(target=_watch, args=(directory,), name="tracemalloc", daemon=True).start()
    from streams.cli import main as cli

    return cli(["worker"])


if __name__ == "__main__":
    sys.exit(main())

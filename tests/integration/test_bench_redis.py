"""`salespulse bench` and Redis: it uses the Redis at SALESPULSE_REDIS_URL when one answers there,
and otherwise starts a redis-server of its own for its workers and stops it with the run."""

from __future__ import annotations

import asyncio
from pathlib import Path

from streams.bench.plumbing import Run, ensure_redis, redis_answers, stop_process
from tests.integration.harness import REDIS_URL


def run_in(workdir: Path) -> Run:
    return Run(runid="t", bootstrap="127.0.0.1:1", workdir=workdir, client_kw={}, topics=[],
               stock_topics=[])


def test_the_bench_starts_its_own_redis_only_when_none_answers(bootstrap: str,
                                                              tmp_path: Path) -> None:
    async def main() -> None:
        # the test infrastructure's Redis answers: used as it is, nothing started
        run = run_in(tmp_path / "given")
        run.workdir.mkdir()
        info = await ensure_redis(run, REDIS_URL)
        assert info == {"url": REDIS_URL, "started": False}
        assert run.redis_url == REDIS_URL and not run.procs
        assert run.child_env()["SALESPULSE_REDIS_URL"] == REDIS_URL

        # nothing answers on port 1: a redis-server of its own, for the run's children
        run = run_in(tmp_path / "own")
        run.workdir.mkdir()
        info = await ensure_redis(run, "redis://127.0.0.1:1/0")
        assert info["started"] and info["url"] == run.redis_url != "redis://127.0.0.1:1/0"
        assert run.child_env()["SALESPULSE_REDIS_URL"] == run.redis_url
        assert await redis_answers(run.redis_url)
        assert (run.workdir / "redis").is_dir() and len(run.procs) == 1
        await stop_process(run.procs[0], 5)  # as the bench stops its children at the end
        assert not await redis_answers(run.redis_url)

        # an empty URL means no Redis at all: the workers run without the Redis sink
        run = run_in(tmp_path / "none")
        run.workdir.mkdir()
        info = await ensure_redis(run, "")
        assert run.redis_url == "" and not info["started"] and not run.procs

    asyncio.run(main())

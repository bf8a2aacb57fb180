"""Helpers for the serving-layer tests: what Redis holds, as /metrics samples, and a private
redis-server a test may stop and start."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from pathlib import Path

import redis

from metrics.catalog import Catalog
from metrics.windows import Calendar
from tests.integration.harness import Samples, free_port

#: Windows that do not roll over during a test (minute and hour may)
STEADY = ("day", "week", "month", "quarter")


def redis_samples(client: redis.Redis, app_id: str, windows: tuple[str, ...] = STEADY) -> Samples:
    """Every current-window KPI value in Redis of ``app_id``, keyed like /metrics samples
    (``salespulse_<scope>_<kpi>`` with the scope's labels, ``window`` and dimensions)."""
    cal = Calendar("UTC")
    out: Samples = {}
    for window in windows:
        start, _ = cal.bounds(window, time.time())
        for key in client.scan_iter(match=f"{app_id}:kpis:{window}:{int(start)}:*", count=1000):
            fields = {k.decode(): v.decode() for k, v in client.hgetall(key).items()}
            if not fields:
                continue
            scope = fields["scope"]
            labels = {"rep": {"rep": fields["id"], "team": fields.get("team", "")},
                      "team": {"team": fields["id"]}, "org": {}}[scope]
            for kpi, value in json.loads(fields["kpis"]).items():
                _flatten(out, f"salespulse_{scope}_{kpi}", {**labels, "window": window}, value,
                         _DIMS.get(kpi, ()))
    return out


_DIMS = {k.name: tuple(Catalog().dimensions_of(k.name)) for k in Catalog().kpis}


def _flatten(out: Samples, name: str, labels: dict, value: object, dims: tuple[str, ...]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(out, name, {**labels, dims[0]: k}, v, dims[1:])
    else:
        out[(name, frozenset(labels.items()))] = float(value)  # type: ignore[arg-type]


def kpi_series(samples: Samples, windows: tuple[str, ...] = STEADY,
               prefixes: tuple[str, ...] = ("salespulse_rep_", "salespulse_team_", "salespulse_org_"),
               ) -> Samples:
    """The windowed KPI series of ``windows`` among /metrics samples, without the zeros shown
    for scopes seen only in the previous window."""
    return {k: v for k, v in samples.items()
            if k[0].startswith(prefixes) and dict(k[1]).get("window") in windows}


class RedisServer:
    """A redis-server of the test's own, on a free port, with its data in ``directory``: it
    can be stopped (saving its data, like a planned restart) and started again."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is installed by deploy/local.sh"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--save", "", "--appendonly", "no", "--dbfilename", "dump.rdb"],
            stdout=open(self.dir / "redis.log", "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
        )
        deadline = time.monotonic() + 20
        while True:
            try:
                if self.client().ping():
                    return self
            except redis.RedisError:
                if time.monotonic() > deadline:
                    raise
            time.sleep(0.1)

    def stop(self) -> None:
        """SHUTDOWN SAVE: its data comes back at the next start, as after a planned restart."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(redis.ConnectionError):  # it closes as the server exits
            self.client().shutdown(save=True)
        self.proc.wait(20)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

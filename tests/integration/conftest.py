"""Integration tests run against a real Kafka broker (KRaft) and Redis on 127.0.0.1.

The session starts its own instance with `deploy/local.sh` on dedicated ports and a state dir of
its own, from empty storage, and stops it at the end; its logs stay in that dir until the next
session (set SALESPULSE_TEST_KEEP_INFRA=1 to keep the instance running, data and all, for the next
run, which then reuses it). Tests never touch a broker they did not start. Each test uses its own
topics and app id.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.harness import REPO

KAFKA_PORT = os.environ.get("SALESPULSE_TEST_KAFKA_PORT", "29092")
INFRA_ENV = {
    **os.environ,
    "KAFKA_PORT": KAFKA_PORT,
    "KAFKA_CONTROLLER_PORT": os.environ.get("SALESPULSE_TEST_KAFKA_CONTROLLER_PORT", "29094"),
    "REDIS_PORT": os.environ.get("SALESPULSE_TEST_REDIS_PORT", "26379"),
    "SALESPULSE_LOCAL_DIR": os.environ.get("SALESPULSE_TEST_LOCAL_DIR", str(REPO / ".local" / "test")),
}


def _local(command: str) -> None:
    subprocess.run([str(REPO / "deploy" / "local.sh"), command], env=INFRA_ENV, check=True)


@pytest.fixture(scope="session")
def bootstrap() -> Iterator[str]:
    keep = os.environ.get("SALESPULSE_TEST_KEEP_INFRA")
    if not keep:
        # Every test makes topics of its own: a data dir kept from one session to the next grew
        # by every run's partition directories, and at ~20,000 of them the broker passed its open-file
        # limit ("Too many open files": it shut down mid-suite and every later test failed).
        _local("reset")
    _local("up")
    try:
        yield f"127.0.0.1:{KAFKA_PORT}"
    finally:
        if not keep:
            _local("down")


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def broker_outage(bootstrap: str) -> Iterator[tuple]:
    """(stop, start): stop the session's Kafka broker (Redis keeps running) and start it again.
    The broker is started again at the end of the test whatever happened."""
    stopped = []

    def stop() -> None:
        stopped.append(True)
        _local("kafka-stop")

    def start() -> None:
        _local("kafka-start")
        stopped.clear()

    try:
        yield stop, start
    finally:
        if stopped:
            _local("kafka-start")

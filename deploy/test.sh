#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh machine:
#   deploy/test.sh            lint, unit tests, Prometheus rule tests, integration tests
#   deploy/test.sh -k crash   extra arguments go to pytest
#
# Installs what it needs: a virtualenv with the project and its test extras (.venv), Debian's
# prometheus (promtool) for the rule tests, kcat and chromium for integration tests; the integration tests start their own Kafka broker
# and Redis with deploy/local.sh on ports 29092/29094/26379 (below the ephemeral port range, 32768-60999 on Linux: a broker restarted mid-test must get its port back) and stop them at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[test] %s\n' "$*" >&2; }
# shellcheck source=lib/common.sh
source deploy/lib/common.sh

VENV=${SALESPULSE_VENV:-.venv}
ensure_venv "$VENV" '.[test]'

log "ruff"
"$VENV/bin/ruff" check .

log "Prometheus rules (promtool check + unit tests)"
bash tests/promtool/run.sh

# kcat (Debian's package): an independent Kafka client that reads sales.metrics in the tests.
command -v kcat >/dev/null 2>&1 || apt_install kcat
# chromium (Debian's package): the real browser the /board test drives (DevTools protocol).
command -v chromium >/dev/null 2>&1 || apt_install chromium

log "pytest (unit + integration on a real broker)"
export SALESPULSE_TEST_KAFKA_CONTROLLER_PORT=${SALESPULSE_TEST_KAFKA_CONTROLLER_PORT:-29094}
exec "$VENV/bin/python" -m pytest -p no:cacheprovider "$@"

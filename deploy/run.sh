#!/usr/bin/env bash
# Run salespulse on this machine, no Docker needed:
#   deploy/run.sh             local Kafka + Redis, a worker, and the demo event generator
#   DEMO_RATE=500 deploy/run.sh
#
# Installs what it needs (a virtualenv .venv with the project; Java, Maven and redis-server
# through deploy/local.sh), starts Kafka and Redis, then the worker in the background (log in
# .local/worker.log) and the demo generator in the foreground. Ctrl-C stops the generator and
# the worker; Kafka and Redis keep running (deploy/local.sh down stops them).
# /metrics: http://127.0.0.1:${SALESPULSE_WEB_PORT:-6066}/metrics
# live board: http://127.0.0.1:${SALESPULSE_WEB_PORT:-6066}/board (API: /api/v1/..., docs/openapi.json)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log() { printf '[run] %s\n' "$*" >&2; }
# shellcheck source=lib/common.sh
source deploy/lib/common.sh

VENV=${SALESPULSE_VENV:-.venv}
ensure_venv "$VENV" .

deploy/local.sh up
eval "$(deploy/local.sh env)"
export SALESPULSE_KAFKA_BOOTSTRAP SALESPULSE_REDIS_URL
mkdir -p .local

log "starting the worker (log: .local/worker.log)"
"$VENV/bin/salespulse" worker >.local/worker.log 2>&1 &
worker=$!
trap 'log "stopping the worker"; kill "$worker" 2>/dev/null || true; wait "$worker" 2>/dev/null || true' EXIT

port=${SALESPULSE_WEB_PORT:-6066}
for _ in $(seq 1 120); do
    if curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$worker" 2>/dev/null; then
        log "the worker exited; last lines of .local/worker.log:"; tail -30 .local/worker.log >&2; exit 1
    fi
    sleep 0.5
done
log "worker serving: http://127.0.0.1:$port/metrics"
log "live board:     http://127.0.0.1:$port/board   (API: http://127.0.0.1:$port/api/v1/org)"
log "demo generator: ${DEMO_REPS:-200} reps in ${DEMO_TEAMS:-10} teams at ${DEMO_RATE:-200} events/s (Ctrl-C stops)"
"$VENV/bin/salespulse" demo --reps "${DEMO_REPS:-200}" --teams "${DEMO_TEAMS:-10}" --rate "${DEMO_RATE:-200}"

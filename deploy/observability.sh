#!/usr/bin/env bash
# Local Prometheus + Alertmanager for salespulse without Docker: Debian's `prometheus` and
# `prometheus-alertmanager` binaries on 127.0.0.1, scraping a worker's /metrics, evaluating the
# repo's alert rules and delivering alerts to a webhook.
#
#   deploy/observability.sh up       install what is missing, write the configs, start both (or
#                                    reload them if already running), wait until ready
#   deploy/observability.sh down     stop both (SIGTERM, then SIGKILL); fine if not running
#   deploy/observability.sh status   print the state of each; exit 0 only if both are ready
#   deploy/observability.sh env      print `export ...` lines: eval "$(deploy/observability.sh env)"
#
# Configuration (environment):
#   PROMETHEUS_PORT             Prometheus web/API port on 127.0.0.1 (default 9090)
#   ALERTMANAGER_PORT           Alertmanager web/API port on 127.0.0.1 (default 9093)
#   SALESPULSE_SCRAPE_TARGET    worker(s) to scrape as job "salespulse", host:port, comma-separated
#                               for several workers (default 127.0.0.1:6066)
#   SCRAPE_INTERVAL             scrape and rule evaluation interval (default 5s)
#   SALESPULSE_RULES_DIR        directory whose *.yml / *.yaml rule files are loaded
#                               (default <repo>/deploy/prometheus/rules)
#   SALESPULSE_RULES_FOR        if set (e.g. 5s), load a copy of those rules with every `for:`
#                               replaced by this duration: for end-to-end tests that cannot wait
#                               minutes for an alert
#   ALERT_WEBHOOK_URL           where Alertmanager posts alerts (webhook JSON, version 4)
#                               (default http://127.0.0.1:9099/alerts)
#   ALERT_GROUP_WAIT            Alertmanager group_wait (default 10s)
#   ALERT_GROUP_INTERVAL        Alertmanager group_interval (default 10s)
#   ALERT_REPEAT_INTERVAL       Alertmanager repeat_interval (default 1h)
#   PROMETHEUS_RETENTION        TSDB retention (default 2d)
#   SALESPULSE_LOCAL_DIR        state dir; this script uses its observability/ subdir for
#                               configs, data, logs and pid files (default <repo>/.local)
#   OBSERVABILITY_START_TIMEOUT seconds to wait for each server to be ready (default 60)
#   OBSERVABILITY_STOP_TIMEOUT  seconds to wait after SIGTERM before SIGKILL (default 20)
#   PROMETHEUS_BIN, ALERTMANAGER_BIN, PROMTOOL_BIN, AMTOOL_BIN   binaries to use (default: found
#                               in PATH; Debian names prometheus, prometheus-alertmanager,
#                               promtool, amtool), installed with apt-get when missing
#
# Instances with different state dirs and ports coexist. `up` on a running instance rewrites the
# configs and reloads both servers (new rules, new target, new webhook), but cannot move ports:
# run `down` first for that.
set -euo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_DIR=$(dirname "$DEPLOY_DIR")
readonly DEPLOY_DIR REPO_DIR
# shellcheck source=lib/common.sh
source "$DEPLOY_DIR/lib/common.sh"

PROMETHEUS_PORT=${PROMETHEUS_PORT:-9090}
ALERTMANAGER_PORT=${ALERTMANAGER_PORT:-9093}
SCRAPE_TARGET=${SALESPULSE_SCRAPE_TARGET:-127.0.0.1:6066}
SCRAPE_INTERVAL=${SCRAPE_INTERVAL:-5s}
RULES_DIR=${SALESPULSE_RULES_DIR:-$REPO_DIR/deploy/prometheus/rules}
RULES_FOR=${SALESPULSE_RULES_FOR:-}
WEBHOOK_URL=${ALERT_WEBHOOK_URL:-http://127.0.0.1:9099/alerts}
GROUP_WAIT=${ALERT_GROUP_WAIT:-10s}
GROUP_INTERVAL=${ALERT_GROUP_INTERVAL:-10s}
REPEAT_INTERVAL=${ALERT_REPEAT_INTERVAL:-1h}
RETENTION=${PROMETHEUS_RETENTION:-2d}
START_TIMEOUT=${OBSERVABILITY_START_TIMEOUT:-60}
STOP_TIMEOUT=${OBSERVABILITY_STOP_TIMEOUT:-20}
STATE=${SALESPULSE_LOCAL_DIR:-$REPO_DIR/.local}

log() { printf '[observability] %s\n' "$*" >&2; }

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

# --- validation and paths -------------------------------------------------------------------

check_duration() { # name value (Prometheus duration: 5s, 1m30s, 250ms, 1h, ...)
    [[ $2 =~ ^([0-9]+(ms|s|m|h|d|w|y))+$ ]] ||
        die "$1 must be a duration such as 5s, 1m30s or 250ms, got '$2'"
}

validate_config() {
    check_port PROMETHEUS_PORT "$PROMETHEUS_PORT"
    check_port ALERTMANAGER_PORT "$ALERTMANAGER_PORT"
    PROMETHEUS_PORT=$((10#$PROMETHEUS_PORT))
    ALERTMANAGER_PORT=$((10#$ALERTMANAGER_PORT))
    ((PROMETHEUS_PORT != ALERTMANAGER_PORT)) ||
        die "PROMETHEUS_PORT and ALERTMANAGER_PORT must differ (both $PROMETHEUS_PORT)"
    check_duration SCRAPE_INTERVAL "$SCRAPE_INTERVAL"
    check_duration ALERT_GROUP_WAIT "$GROUP_WAIT"
    check_duration ALERT_GROUP_INTERVAL "$GROUP_INTERVAL"
    check_duration ALERT_REPEAT_INTERVAL "$REPEAT_INTERVAL"
    check_duration PROMETHEUS_RETENTION "$RETENTION"
    [[ -z $RULES_FOR ]] || check_duration SALESPULSE_RULES_FOR "$RULES_FOR"
    [[ $START_TIMEOUT =~ ^[0-9]+$ ]] || die "OBSERVABILITY_START_TIMEOUT must be whole seconds, got '$START_TIMEOUT'"
    [[ $STOP_TIMEOUT =~ ^[0-9]+$ ]] || die "OBSERVABILITY_STOP_TIMEOUT must be whole seconds, got '$STOP_TIMEOUT'"
    local t
    IFS=, read -r -a TARGETS <<<"$SCRAPE_TARGET"
    ((${#TARGETS[@]} > 0)) || die "SALESPULSE_SCRAPE_TARGET is empty"
    for t in "${TARGETS[@]}"; do
        [[ $t =~ ^[A-Za-z0-9._-]+:[0-9]+$ || $t =~ ^\[[0-9A-Fa-f:.]+\]:[0-9]+$ ]] ||
            die "SALESPULSE_SCRAPE_TARGET must be host:port[,host:port...], got '$SCRAPE_TARGET'"
    done
    [[ $WEBHOOK_URL =~ ^https?://[^[:space:]\"\\]+$ ]] ||
        die "ALERT_WEBHOOK_URL must be an http(s) URL without spaces, quotes or backslashes, got '$WEBHOOK_URL'"
    [[ -n $STATE ]] || die "SALESPULSE_LOCAL_DIR is empty"
}

set_paths() {
    STATE=$(realpath -m -- "$STATE")
    [[ $STATE != / ]] || die "SALESPULSE_LOCAL_DIR must not be /"
    OBS="$STATE/observability"
    RUN_DIR="$OBS/run"
    LOG_DIR="$OBS/logs"
    PROM_DIR="$OBS/prometheus"
    PROM_CONFIG="$PROM_DIR/prometheus.yml"
    PROM_DATA="$PROM_DIR/data"
    PROM_PID="$RUN_DIR/prometheus.pid"
    PROM_LOG="$LOG_DIR/prometheus.log"
    AM_DIR="$OBS/alertmanager"
    AM_CONFIG="$AM_DIR/alertmanager.yml"
    AM_DATA="$AM_DIR/data"
    AM_PID="$RUN_DIR/alertmanager.pid"
    AM_LOG="$LOG_DIR/alertmanager.log"
    RULES_COPY="$OBS/rules"
    PORTS_FILE="$RUN_DIR/ports"
    PROM_URL="http://127.0.0.1:$PROMETHEUS_PORT"
    AM_URL="http://127.0.0.1:$ALERTMANAGER_PORT"
}

lock_state() {
    mkdir -p "$RUN_DIR"
    lock_dir "$OBS" 300 deploy/observability.sh
}

# --- prerequisites --------------------------------------------------------------------------

find_bin() { # override-value names... -> path on stdout, or nothing
    local override=$1 name
    shift
    if [[ -n $override ]]; then
        [[ -x $override ]] || die "$override is not an executable"
        echo "$override"
        return
    fi
    for name in "$@"; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return
        fi
    done
}

ensure_tools() {
    PROMETHEUS=$(find_bin "${PROMETHEUS_BIN:-}" prometheus)
    PROMTOOL=$(find_bin "${PROMTOOL_BIN:-}" promtool)
    ALERTMANAGER=$(find_bin "${ALERTMANAGER_BIN:-}" prometheus-alertmanager alertmanager)
    AMTOOL=$(find_bin "${AMTOOL_BIN:-}" amtool)
    local -a missing=()
    [[ -n $PROMETHEUS && -n $PROMTOOL ]] || missing+=(prometheus)
    [[ -n $ALERTMANAGER && -n $AMTOOL ]] || missing+=(prometheus-alertmanager)
    command -v curl >/dev/null 2>&1 || missing+=(curl)
    if ((${#missing[@]} > 0)); then
        apt_install "${missing[@]}"
        PROMETHEUS=$(find_bin "${PROMETHEUS_BIN:-}" prometheus)
        PROMTOOL=$(find_bin "${PROMTOOL_BIN:-}" promtool)
        ALERTMANAGER=$(find_bin "${ALERTMANAGER_BIN:-}" prometheus-alertmanager alertmanager)
        AMTOOL=$(find_bin "${AMTOOL_BIN:-}" amtool)
    fi
    [[ -n $PROMETHEUS ]] || die "no prometheus binary after installing the prometheus package"
    [[ -n $PROMTOOL ]] || die "no promtool binary after installing the prometheus package"
    [[ -n $ALERTMANAGER ]] || die "no prometheus-alertmanager binary after installing it"
    [[ -n $AMTOOL ]] || die "no amtool binary after installing prometheus-alertmanager"
    command -v curl >/dev/null 2>&1 || die "no curl after installing it"
}

# --- configuration --------------------------------------------------------------------------

# The rule directory Prometheus loads: SALESPULSE_RULES_DIR itself, or (SALESPULSE_RULES_FOR set)
# a copy of its rule files with every `for:` replaced, staged in $STAGE/rules first.
prepare_rules() {
    [[ -d $RULES_DIR ]] || die "SALESPULSE_RULES_DIR $RULES_DIR is not a directory"
    RULES_DIR=$(realpath -- "$RULES_DIR")
    RULE_FILES=()
    local f
    for f in "$RULES_DIR"/*.yml "$RULES_DIR"/*.yaml; do
        [[ -f $f ]] && RULE_FILES+=("$f")
    done
    ((${#RULE_FILES[@]} > 0)) || die "no *.yml or *.yaml rule files in $RULES_DIR"
    if [[ -z $RULES_FOR ]]; then
        EFFECTIVE_RULES_DIR=$RULES_DIR
        return
    fi
    mkdir -p "$STAGE/rules"
    local -a staged=()
    for f in "${RULE_FILES[@]}"; do
        sed -E "s/^([[:space:]]+)for:[[:space:]]*[0-9][0-9a-z]*[[:space:]]*(#.*)?$/\\1for: $RULES_FOR/" \
            "$f" >"$STAGE/rules/$(basename "$f")"
        staged+=("$STAGE/rules/$(basename "$f")")
    done
    RULE_FILES=("${staged[@]}")
    EFFECTIVE_RULES_DIR=$RULES_COPY
    log "loading a copy of the rules in $RULES_DIR with every 'for:' set to $RULES_FOR"
}

# Writes both configs (and the rules copy) to a staging dir, checks them with promtool and
# amtool, and only then puts them in place: a rejected change leaves the files the running
# servers use as they were.
render_configs() {
    mkdir -p "$PROM_DIR" "$PROM_DATA" "$AM_DIR" "$AM_DATA" "$LOG_DIR" "$RUN_DIR"
    STAGE="$OBS/staging"
    rm -rf "$STAGE"
    mkdir -p "$STAGE"
    prepare_rules
    local t targets=""
    for t in "${TARGETS[@]}"; do targets+="\"$t\", "; done
    targets=${targets%, }
    cat >"$STAGE/prometheus.yml" <<EOF
# Written by deploy/observability.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ); edits are overwritten.
global:
  scrape_interval: $SCRAPE_INTERVAL
  evaluation_interval: $SCRAPE_INTERVAL

rule_files:
  - "$EFFECTIVE_RULES_DIR/*.yml"
  - "$EFFECTIVE_RULES_DIR/*.yaml"

alerting:
  alertmanagers:
    - static_configs:
        - targets: ["127.0.0.1:$ALERTMANAGER_PORT"]

scrape_configs:
  - job_name: salespulse
    metrics_path: /metrics
    static_configs:
      - targets: [$targets]
EOF
    cat >"$STAGE/alertmanager.yml" <<EOF
# Written by deploy/observability.sh at $(date -u +%Y-%m-%dT%H:%M:%SZ); edits are overwritten.
route:
  receiver: salespulse-webhook
  group_by: [alertname, team]
  group_wait: $GROUP_WAIT
  group_interval: $GROUP_INTERVAL
  repeat_interval: $REPEAT_INTERVAL

receivers:
  - name: salespulse-webhook
    webhook_configs:
      - url: "$WEBHOOK_URL"
        send_resolved: true
EOF
    local out
    if ! out=$("$PROMTOOL" check config --syntax-only "$STAGE/prometheus.yml" 2>&1); then
        printf '%s\n' "$out" >&2
        rm -rf "$STAGE"
        die "promtool rejects the Prometheus configuration (above)"
    fi
    if ! out=$("$PROMTOOL" check rules "${RULE_FILES[@]}" 2>&1); then
        printf '%s\n' "$out" >&2
        rm -rf "$STAGE"
        die "promtool rejects the rule files of $RULES_DIR (above)"
    fi
    if ! out=$("$AMTOOL" check-config "$STAGE/alertmanager.yml" 2>&1); then
        printf '%s\n' "$out" >&2
        rm -rf "$STAGE"
        die "amtool rejects the Alertmanager configuration (above)"
    fi
    rm -rf "$RULES_COPY"
    if [[ -d $STAGE/rules ]]; then mv "$STAGE/rules" "$RULES_COPY"; fi
    mv -f "$STAGE/prometheus.yml" "$PROM_CONFIG"
    mv -f "$STAGE/alertmanager.yml" "$AM_CONFIG"
    rm -rf "$STAGE"
}

# --- process helpers ------------------------------------------------------------------------

# Ours = a process whose arguments include --config.file=<this state dir's config>.
is_ours() { # pid config
    [[ $1 =~ ^[0-9]+$ && -r /proc/$1/cmdline ]] || return 1
    local -a args=()
    mapfile -d '' -t args 2>/dev/null <"/proc/$1/cmdline" || return 1
    local a
    for a in "${args[@]}"; do
        [[ $a == "--config.file=$2" ]] && return 0
    done
    return 1
}

# pid of our instance: the pid file, or else a scan of /proc (a lost pid file).
find_pid() { # prometheus|alertmanager -> pid on stdout, exit 1 if not running
    local pidfile config pid p
    if [[ $1 == prometheus ]]; then pidfile=$PROM_PID config=$PROM_CONFIG; else pidfile=$AM_PID config=$AM_CONFIG; fi
    if [[ -f $pidfile ]]; then
        pid=$(<"$pidfile")
        if is_ours "$pid" "$config"; then
            echo "$pid"
            return 0
        fi
    fi
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        if is_ours "$pid" "$config"; then
            if [[ -d $RUN_DIR ]]; then echo "$pid" >"$pidfile"; fi
            echo "$pid"
            return 0
        fi
    done
    rm -f "$pidfile"
    return 1
}

# Start a daemon in its own session, detached from our stdin/stdout/stderr and lock fd, and
# write its pid (the exec'd program keeps the pid of the bash that wrote it).

is_ready() { # base-url
    curl -fsS -o /dev/null --max-time 2 "$1/-/ready" 2>/dev/null
}

wait_ready() { # name pid base-url logfile
    local name=$1 pid=$2 url=$3 logfile=$4 deadline=$((SECONDS + START_TIMEOUT))
    while ! is_ready "$url"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            show_tail "$logfile"
            die "$name (pid $pid) exited during start-up; log: $logfile"
        fi
        if ((SECONDS >= deadline)); then
            show_tail "$logfile"
            die "$name (pid $pid) not ready at $url/-/ready after ${START_TIMEOUT}s; log: $logfile (still running: 'deploy/observability.sh down' stops it)"
        fi
        sleep 0.2
    done
}

check_port_free() { # name port envvar
    if port_open "$2"; then
        local holder
        holder=$(who_listens "$2")
        die "port $2 is already in use${holder:+ by $holder}, not by the $1 of $OBS: stop that or set $3 to a free port"
    fi
}

# The ports an instance was started with: a running instance cannot move.
check_same_ports() {
    [[ -f $PORTS_FILE ]] || return 0
    local old
    old=$(<"$PORTS_FILE")
    [[ $old == "$PROMETHEUS_PORT $ALERTMANAGER_PORT" ]] ||
        die "this state dir's servers run on ports $old (prometheus alertmanager), not $PROMETHEUS_PORT $ALERTMANAGER_PORT: 'deploy/observability.sh down' first"
}

reload() { # name base-url
    local out
    if ! out=$(curl -fsS --max-time 30 -X POST "$2/-/reload" 2>&1); then
        die "$1 did not accept the new configuration: $out (see $([[ $1 == prometheus ]] && echo "$PROM_LOG" || echo "$AM_LOG"))"
    fi
    log "$1 reloaded its configuration"
}

# --- commands -------------------------------------------------------------------------------

start_alertmanager() {
    "$ALERTMANAGER" --version >/dev/null 2>&1 || die "$ALERTMANAGER does not run"
    spawn "$AM_PID" "$AM_LOG" "$AM_DIR" "$ALERTMANAGER" \
        "--config.file=$AM_CONFIG" \
        "--storage.path=$AM_DATA" \
        "--web.listen-address=127.0.0.1:$ALERTMANAGER_PORT" \
        "--web.external-url=$AM_URL/" \
        "--cluster.listen-address=" \
        "--log.level=info"
    wait_ready alertmanager "$(<"$AM_PID")" "$AM_URL" "$AM_LOG"
    log "alertmanager ready at $AM_URL (pid $(<"$AM_PID"))"
}

start_prometheus() {
    spawn "$PROM_PID" "$PROM_LOG" "$PROM_DIR" "$PROMETHEUS" \
        "--config.file=$PROM_CONFIG" \
        "--storage.tsdb.path=$PROM_DATA" \
        "--storage.tsdb.retention.time=$RETENTION" \
        "--web.listen-address=127.0.0.1:$PROMETHEUS_PORT" \
        "--web.external-url=$PROM_URL/" \
        "--web.enable-lifecycle" \
        "--log.level=info"
    wait_ready prometheus "$(<"$PROM_PID")" "$PROM_URL" "$PROM_LOG"
    log "prometheus ready at $PROM_URL (pid $(<"$PROM_PID"))"
}

cmd_up() {
    lock_state
    ensure_tools
    local prom_pid="" am_pid=""
    prom_pid=$(find_pid prometheus) || prom_pid=""
    am_pid=$(find_pid alertmanager) || am_pid=""
    if [[ -n $prom_pid || -n $am_pid ]]; then check_same_ports; fi
    # Ports first, for both, so that a conflict does not leave one half started.
    [[ -n $am_pid ]] || check_port_free alertmanager "$ALERTMANAGER_PORT" ALERTMANAGER_PORT
    [[ -n $prom_pid ]] || check_port_free prometheus "$PROMETHEUS_PORT" PROMETHEUS_PORT
    render_configs
    echo "$PROMETHEUS_PORT $ALERTMANAGER_PORT" >"$PORTS_FILE"
    if [[ -n $am_pid ]]; then
        is_ready "$AM_URL" || die "alertmanager (pid $am_pid) runs but is not ready at $AM_URL; see $AM_LOG"
        reload alertmanager "$AM_URL"
    else
        start_alertmanager
    fi
    if [[ -n $prom_pid ]]; then
        is_ready "$PROM_URL" || die "prometheus (pid $prom_pid) runs but is not ready at $PROM_URL; see $PROM_LOG"
        reload prometheus "$PROM_URL"
    else
        start_prometheus
    fi
    log "scraping ${TARGETS[*]} every $SCRAPE_INTERVAL as job salespulse; rules from $EFFECTIVE_RULES_DIR; alerts to $WEBHOOK_URL"
    log "prometheus $PROM_URL  alertmanager $AM_URL  state $OBS"
}

cmd_down() {
    if [[ ! -d $OBS ]]; then
        log "nothing to stop ($OBS does not exist)"
        return 0
    fi
    lock_state
    local pid
    if pid=$(find_pid prometheus); then
        stop_pid prometheus "$pid" "$STOP_TIMEOUT"
    else
        log "prometheus is not running"
    fi
    if pid=$(find_pid alertmanager); then
        stop_pid alertmanager "$pid" "$STOP_TIMEOUT"
    else
        log "alertmanager is not running"
    fi
    rm -f "$PROM_PID" "$AM_PID" "$PORTS_FILE"
}

# A one-line summary of the rule groups and targets, from the Prometheus API.
prometheus_summary() {
    command -v python3 >/dev/null 2>&1 || return 0
    local rules targets
    rules=$(curl -fsS --max-time 5 "$PROM_URL/api/v1/rules" 2>/dev/null) || return 0
    targets=$(curl -fsS --max-time 5 "$PROM_URL/api/v1/targets?state=active" 2>/dev/null) || return 0
    python3 - "$rules" "$targets" <<'EOF' || true
import json, sys
rules = json.loads(sys.argv[1])["data"]["groups"]
targets = json.loads(sys.argv[2])["data"]["activeTargets"]
n = sum(len(g["rules"]) for g in rules)
firing = sorted({r["name"] for g in rules for r in g["rules"] if r.get("state") == "firing"})
print(f"  rules: {len(rules)} groups, {n} rules ({', '.join(g['name'] for g in rules) or 'none'});"
      f" firing: {', '.join(firing) or 'none'}")
for t in targets:
    err = f" ({t['lastError']})" if t.get("lastError") else ""
    print(f"  target {t['labels'].get('job')} {t['scrapeUrl']}: {t['health']}{err}")
EOF
}

cmd_status() {
    local rc=0 pid
    if [[ -d $OBS ]] && pid=$(find_pid prometheus); then
        if is_ready "$PROM_URL"; then
            echo "prometheus: ready at $PROM_URL (pid $pid)"
            prometheus_summary
        else
            echo "prometheus: running (pid $pid) but not ready at $PROM_URL; log $PROM_LOG"
            rc=1
        fi
    else
        echo "prometheus: not running"
        rc=1
    fi
    if [[ -d $OBS ]] && pid=$(find_pid alertmanager); then
        if is_ready "$AM_URL"; then
            echo "alertmanager: ready at $AM_URL (pid $pid)"
        else
            echo "alertmanager: running (pid $pid) but not ready at $AM_URL; log $AM_LOG"
            rc=1
        fi
    else
        echo "alertmanager: not running"
        rc=1
    fi
    return "$rc"
}

cmd_env() {
    printf 'export PROMETHEUS_URL=%q\n' "$PROM_URL"
    printf 'export ALERTMANAGER_URL=%q\n' "$AM_URL"
}

main() {
    local cmd=${1:-}
    case $cmd in
    up | down | status | env) ;;
    -h | --help | help)
        usage
        return 0
        ;;
    *)
        usage
        die "unknown command '${cmd}': use up, down, status or env"
        ;;
    esac
    validate_config
    set_paths
    "cmd_$cmd"
}

main "$@"

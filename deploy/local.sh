#!/usr/bin/env bash
# Local infrastructure for salespulse without Docker: a single-node Apache Kafka 4.1.1 broker
# (KRaft, broker+controller in one JVM) and a Redis server, both on 127.0.0.1.
#
#   deploy/local.sh up       fetch the jars if needed, format storage if needed, start both, wait
#                            until they serve (idempotent: already running is fine)
#   deploy/local.sh down     stop both (SIGTERM, then SIGKILL); fine if not running
#   deploy/local.sh status   print the state of each; exit 0 only if both serve
#   deploy/local.sh kafka-stop   stop only the broker (SIGTERM, then SIGKILL), Redis keeps running
#   deploy/local.sh kafka-start  start only the broker again (as `up` does; it must be set up)
#   deploy/local.sh reset    down, then wipe the data and logs (the cached jars stay)
#   deploy/local.sh env      print `export SALESPULSE_...` lines:  eval "$(deploy/local.sh env)"
#
# Configuration (environment):
#   SALESPULSE_LOCAL_DIR     state dir: pid files, data, logs (default: <repo>/.local)
#   KAFKA_PORT               broker listener (default 9092)
#   KAFKA_CONTROLLER_PORT    KRaft controller listener (default 9094; 9093 is Alertmanager's)
#   REDIS_PORT               Redis (default 6379)
#   SALESPULSE_KAFKA_LIBS    jar cache, shared by all state dirs
#                            (default: ${XDG_CACHE_HOME:-$HOME/.cache}/salespulse/kafka-4.1.1/libs)
#   SALESPULSE_START_TIMEOUT seconds to wait for each service to serve (default 60)
#   SALESPULSE_STOP_TIMEOUT  seconds to wait after SIGTERM before SIGKILL (default 30)
#   KAFKA_HEAP_OPTS          broker heap (default "-Xmx1g -Xms256m")
#   KAFKA_JVM_OPTS           extra broker JVM options (default none)
#
# Instances with different state dirs and ports coexist. What is missing is installed with
# apt-get (java 17, maven, redis-server); the first `up` fetches the broker's jars from Maven
# Central with deploy/kafka/pom.xml, later ones are offline.
set -euo pipefail

readonly KAFKA_VERSION=4.1.1

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
REPO_DIR=$(dirname "$DEPLOY_DIR")
readonly DEPLOY_DIR REPO_DIR
# shellcheck source=lib/common.sh
source "$DEPLOY_DIR/lib/common.sh"
readonly KAFKA_CONF_DIR="$DEPLOY_DIR/kafka"
readonly POM="$KAFKA_CONF_DIR/pom.xml"
readonly SERVER_TEMPLATE="$KAFKA_CONF_DIR/server.properties.in"
readonly BROKER_LOG4J="$KAFKA_CONF_DIR/log4j2.properties"

KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9094}
REDIS_PORT=${REDIS_PORT:-6379}
START_TIMEOUT=${SALESPULSE_START_TIMEOUT:-60}
STOP_TIMEOUT=${SALESPULSE_STOP_TIMEOUT:-30}
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xmx1g -Xms256m}
KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS:-}
LIBS=${SALESPULSE_KAFKA_LIBS:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/salespulse/kafka-$KAFKA_VERSION/libs}
STATE=${SALESPULSE_LOCAL_DIR:-$REPO_DIR/.local}

log() { printf '[local] %s\n' "$*" >&2; }

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
}

# --- validation and paths -------------------------------------------------------------------

validate_config() {
    check_port KAFKA_PORT "$KAFKA_PORT"
    check_port KAFKA_CONTROLLER_PORT "$KAFKA_CONTROLLER_PORT"
    check_port REDIS_PORT "$REDIS_PORT"
    KAFKA_PORT=$((10#$KAFKA_PORT))
    KAFKA_CONTROLLER_PORT=$((10#$KAFKA_CONTROLLER_PORT))
    REDIS_PORT=$((10#$REDIS_PORT))
    local a=$KAFKA_PORT b=$KAFKA_CONTROLLER_PORT c=$REDIS_PORT
    if ((a == b || a == c || b == c)); then
        die "KAFKA_PORT ($a), KAFKA_CONTROLLER_PORT ($b) and REDIS_PORT ($c) must differ"
    fi
    [[ $START_TIMEOUT =~ ^[0-9]+$ ]] || die "SALESPULSE_START_TIMEOUT must be whole seconds, got '$START_TIMEOUT'"
    [[ $STOP_TIMEOUT =~ ^[0-9]+$ ]] || die "SALESPULSE_STOP_TIMEOUT must be whole seconds, got '$STOP_TIMEOUT'"
    [[ -n $STATE ]] || die "SALESPULSE_LOCAL_DIR is empty"
    [[ -n $LIBS ]] || die "SALESPULSE_KAFKA_LIBS is empty"
    # Both end up in Java properties / class paths: keep them plain.
    [[ $STATE != *[,\\:]* ]] || die "SALESPULSE_LOCAL_DIR must not contain ',', ':' or '\\': $STATE"
    [[ $LIBS != *[\\:]* ]] || die "SALESPULSE_KAFKA_LIBS must not contain ':' or '\\': $LIBS"
}

set_paths() {
    # Absolute and resolved, so that pid checks and the broker config do not depend on the
    # cwd (status and env create nothing, so the dir need not exist yet).
    STATE=$(realpath -m -- "$STATE")
    # reset wipes kafka/ redis/ logs/ run/ in it: not in / , $HOME or the repo itself.
    case $STATE in
    / | "$(realpath -m -- "${HOME:-/}")" | "$REPO_DIR")
        die "SALESPULSE_LOCAL_DIR must be a dir of its own, not $STATE"
        ;;
    esac
    RUN_DIR="$STATE/run"
    LOG_DIR="$STATE/logs"
    KAFKA_DIR="$STATE/kafka"
    KAFKA_DATA="$KAFKA_DIR/data"
    KAFKA_PROPS="$KAFKA_DIR/server.properties"
    KAFKA_PID="$RUN_DIR/kafka.pid"
    KAFKA_LOG_DIR="$LOG_DIR/kafka"
    KAFKA_OUT="$LOG_DIR/kafka.out"
    TOOLS_LOG4J="$KAFKA_DIR/tools-log4j2.properties"
    ADMIN_PROPS="$KAFKA_DIR/admin.properties"
    REDIS_DIR="$STATE/redis"
    REDIS_PID="$RUN_DIR/redis.pid"
    REDIS_LOG="$LOG_DIR/redis.log"
}

lock_state() {
    mkdir -p "$RUN_DIR"
    lock_dir "$STATE" 600 deploy/local.sh
}

# --- prerequisites --------------------------------------------------------------------------

java_major() { # java binary -> major version on stdout
    "$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\)[."].*/\1/p' | head -n 1
}

ensure_java() {
    local candidate="" major
    if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
        candidate="$JAVA_HOME/bin/java"
    elif command -v java >/dev/null 2>&1; then
        candidate=$(command -v java)
    fi
    if [[ -n $candidate ]]; then
        major=$(java_major "$candidate")
        if [[ -n $major ]] && ((major >= 17)); then
            JAVA=$candidate
            return
        fi
        log "$candidate is Java ${major:-?}; Kafka $KAFKA_VERSION needs 17 or later"
    fi
    local j
    for j in /usr/lib/jvm/java-{17,21,25}-openjdk-*/bin/java; do
        if [[ -x $j ]]; then
            JAVA=$j
            return
        fi
    done
    apt_install openjdk-17-jre-headless
    for j in /usr/lib/jvm/java-17-openjdk-*/bin/java; do
        if [[ -x $j ]]; then
            JAVA=$j
            return
        fi
    done
    die "no Java 17 after installing openjdk-17-jre-headless"
}

ensure_redis() {
    if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
        apt_install redis-server
    fi
    REDIS_SERVER=$(command -v redis-server) || die "redis-server not found after installing it"
    REDIS_CLI=$(command -v redis-cli) || die "redis-cli not found after installing redis-server"
}

libs_ok() {
    [[ -f $LIBS/.salespulse-libs && $(<"$LIBS/.salespulse-libs") == "$POM_SUM" ]] &&
        compgen -G "$LIBS/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null
}

# The broker's jars, fetched once by Maven into a cache shared by every state dir. A marker
# holding the pom's checksum says the copy is complete and current.
ensure_libs() {
    POM_SUM=$(sha256sum "$POM" | cut -d' ' -f1)
    if libs_ok; then return; fi
    local parent
    parent=$(dirname "$LIBS")
    mkdir -p "$parent"
    exec 8>"$parent/.libs.lock"
    flock -w 600 8 || die "timed out waiting for another fetch of the Kafka jars ($parent/.libs.lock)"
    if libs_ok; then # fetched by someone else meanwhile
        exec 8>&-
        return
    fi
    command -v mvn >/dev/null 2>&1 || apt_install maven
    local tmp="$LIBS.tmp.$$" old="$LIBS.old.$$" t0=$SECONDS
    rm -rf "$LIBS".tmp.* "$LIBS".old.* # leftovers of an interrupted fetch (we hold the lock)
    log "fetching the Kafka $KAFKA_VERSION jars with Maven into $LIBS (once)"
    # JAVA_HOME so that mvn runs on the Java 17 found above whatever the default is. Its
    # output (and the colour codes Debian's mvn prints even with -B) is shown only on failure.
    local out
    if ! out=$(JAVA_HOME=$(dirname "$(dirname "$(readlink -f "$JAVA")")") \
        mvn -B -q -Dstyle.color=never -f "$POM" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" </dev/null 2>&1); then
        printf '%s\n' "$out" | sed 's/\x1b\[[0-9;]*m//g' >&2
        rm -rf "$tmp"
        die "mvn could not fetch the jars of $POM (is Maven Central reachable?)"
    fi
    compgen -G "$tmp/kafka_2.13-$KAFKA_VERSION.jar" >/dev/null || {
        rm -rf "$tmp"
        die "mvn ran but $tmp has no kafka_2.13-$KAFKA_VERSION.jar"
    }
    printf '%s\n' "$POM_SUM" >"$tmp/.salespulse-libs"
    if [[ -e $LIBS ]]; then mv "$LIBS" "$old"; fi
    mv "$tmp" "$LIBS"
    rm -rf "$old"
    exec 8>&-
    log "fetched $(find "$LIBS" -name '*.jar' | wc -l) jars in $((SECONDS - t0)) s"
}

# --- process helpers ------------------------------------------------------------------------

# Our broker: a java process whose last argument is this state dir's server.properties.
# (Builtins only: find_pid may run this for every process on the machine.)
is_our_kafka() {
    [[ $1 =~ ^[0-9]+$ && -r /proc/$1/cmdline ]] || return 1
    local -a args=()
    mapfile -d '' -t args 2>/dev/null <"/proc/$1/cmdline" || return 1
    ((${#args[@]} > 2)) && [[ ${args[0]} == *java && ${args[-1]} == "$KAFKA_PROPS" && ${args[-2]} == kafka.Kafka ]]
}

# Our Redis: a redis-server process whose working dir is this state dir's redis dir
# (redis-server rewrites its command line, so that is what identifies it).
is_our_redis() {
    [[ $1 =~ ^[0-9]+$ && -r /proc/$1/comm ]] || return 1
    local comm=
    read -r comm 2>/dev/null <"/proc/$1/comm" || return 1
    [[ $comm == redis-server* ]] || return 1
    [[ $(readlink "/proc/$1/cwd" 2>/dev/null) == "$REDIS_DIR" ]]
}

# pid of our instance of a service: the pid file, or else a scan of /proc (a lost pid file).
find_pid() { # kafka|redis -> pid on stdout, exit 1 if not running
    local svc=$1 pidfile check pid p
    if [[ $svc == kafka ]]; then pidfile=$KAFKA_PID check=is_our_kafka; else pidfile=$REDIS_PID check=is_our_redis; fi
    if [[ -f $pidfile ]]; then
        pid=$(<"$pidfile")
        if "$check" "$pid"; then
            echo "$pid"
            return 0
        fi
    fi
    for p in /proc/[0-9]*; do
        pid=${p#/proc/}
        if "$check" "$pid"; then
            if [[ -d $RUN_DIR ]]; then echo "$pid" >"$pidfile"; fi
            echo "$pid"
            return 0
        fi
    done
    rm -f "$pidfile"
    return 1
}

# Start a daemon in its own session, detached from our stdin/stdout/stderr and lock fds, and
# write its pid (the exec'd program keeps the pid of the bash that wrote it).

# A service of ours that is not running needs its ports free (checked for both services before
# starting either, so that a conflict does not leave one half started).
check_ports_free() { # kafka|redis
    local svc=$1 port holder hint
    local -a ports
    if find_pid "$svc" >/dev/null; then return 0; fi
    if [[ $svc == kafka ]]; then
        ports=("$KAFKA_PORT" "$KAFKA_CONTROLLER_PORT") hint="KAFKA_PORT, KAFKA_CONTROLLER_PORT"
    else
        ports=("$REDIS_PORT") hint="REDIS_PORT"
    fi
    for port in "${ports[@]}"; do
        if port_open "$port"; then
            holder=$(who_listens "$port")
            die "port $port is already in use${holder:+ by $holder}, not by the $svc of $STATE: stop that or choose other ports ($hint)"
        fi
    done
}

# --- Kafka ----------------------------------------------------------------------------------

render_kafka_config() {
    mkdir -p "$KAFKA_DIR" "$KAFKA_DATA" "$KAFKA_LOG_DIR" "$RUN_DIR"
    local tpl
    tpl=$(<"$SERVER_TEMPLATE")
    tpl=${tpl//@KAFKA_PORT@/"$KAFKA_PORT"}
    tpl=${tpl//@KAFKA_CONTROLLER_PORT@/"$KAFKA_CONTROLLER_PORT"}
    tpl=${tpl//@KAFKA_DATA_DIR@/"$KAFKA_DATA"}
    [[ $tpl != *@[A-Z_]*@* ]] || die "unreplaced placeholder in $SERVER_TEMPLATE"
    printf '%s\n' "$tpl" >"$KAFKA_PROPS"
    # Client settings of the health check: fail fast instead of retrying for a minute.
    cat >"$ADMIN_PROPS" <<'EOF'
request.timeout.ms=5000
default.api.timeout.ms=8000
socket.connection.setup.timeout.ms=2000
socket.connection.setup.timeout.max.ms=2000
reconnect.backoff.max.ms=500
EOF
    # The tools (health check, console clients) log warnings to stderr only.
    cat >"$TOOLS_LOG4J" <<'EOF'
status = warn
dest = err
appender.stderr.type = Console
appender.stderr.name = STDERR
appender.stderr.target = SYSTEM_ERR
appender.stderr.layout.type = PatternLayout
appender.stderr.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = ERROR
rootLogger.appenderRef.stderr.ref = STDERR
EOF
}

# A Kafka tool from the cached jars, e.g. kafka_tool org.apache.kafka.tools.TopicCommand --list
kafka_tool() { # class args...
    "$JAVA" -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$LIBS/*" "$@"
}

# Serving = the port accepts connections AND a metadata request (listing topics) answers.
kafka_serves() {
    port_open "$KAFKA_PORT" || return 1
    timeout 30 "$JAVA" -Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Dlog4j2.configurationFile="$TOOLS_LOG4J" -cp "$LIBS/*" \
        org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" \
        --command-config "$ADMIN_PROPS" --list </dev/null >/dev/null 2>&1
}

format_kafka_storage() {
    if [[ -f $KAFKA_DATA/meta.properties ]]; then return; fi
    local cluster_id
    # A Kafka Uuid: 16 random bytes, URL-safe base64 without padding (22 chars).
    cluster_id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')
    log "formatting Kafka storage in $KAFKA_DATA (cluster id $cluster_id)"
    local out
    if ! out=$(kafka_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_PROPS" </dev/null 2>&1); then
        printf '%s\n' "$out" >&2
        die "formatting Kafka storage failed"
    fi
}

wait_kafka() { # pid
    local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            show_tail "$KAFKA_OUT" "$KAFKA_LOG_DIR/server.log"
            die "Kafka (pid $pid) exited during startup; logs: $KAFKA_LOG_DIR/server.log, $KAFKA_OUT"
        fi
        if kafka_serves; then return 0; fi
        sleep 0.5
    done
    show_tail "$KAFKA_OUT" "$KAFKA_LOG_DIR/server.log"
    stop_pid Kafka "$pid" "$STOP_TIMEOUT"
    rm -f "$KAFKA_PID"
    die "Kafka did not serve on 127.0.0.1:$KAFKA_PORT within ${START_TIMEOUT}s (stopped it); logs: $KAFKA_LOG_DIR/server.log"
}

start_kafka() {
    local pid t0=$SECONDS
    if pid=$(find_pid kafka); then
        if kafka_serves; then
            log "Kafka already running (pid $pid) on 127.0.0.1:$KAFKA_PORT"
            return 0
        fi
        log "Kafka (pid $pid) is running but not serving yet: waiting"
        wait_kafka "$pid"
        log "Kafka serves on 127.0.0.1:$KAFKA_PORT (pid $pid)"
        return 0
    fi
    check_ports_free kafka
    render_kafka_config
    format_kafka_storage
    log "starting Kafka $KAFKA_VERSION on 127.0.0.1:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT)"
    local -a heap extra
    read -r -a heap <<<"$KAFKA_HEAP_OPTS"
    read -r -a extra <<<"$KAFKA_JVM_OPTS"
    printf '\n==== %s starting Kafka\n' "$(date -Is)" >>"$KAFKA_OUT"
    spawn "$KAFKA_PID" "$KAFKA_OUT" "$KAFKA_DIR" \
        "$JAVA" "${heap[@]}" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dkafka.logs.dir="$KAFKA_LOG_DIR" -Dlog4j2.configurationFile="$BROKER_LOG4J" \
        "${extra[@]}" -cp "$LIBS/*" kafka.Kafka "$KAFKA_PROPS"
    pid=$(<"$KAFKA_PID")
    wait_kafka "$pid"
    log "Kafka serves on 127.0.0.1:$KAFKA_PORT (pid $pid, $((SECONDS - t0)) s)"
}

# --- Redis ----------------------------------------------------------------------------------

redis_serves() {
    [[ $(timeout 3 "$REDIS_CLI" -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]
}

start_redis() {
    local pid i
    if pid=$(find_pid redis); then
        for ((i = 0; i < START_TIMEOUT * 5; i++)); do
            if redis_serves; then
                log "Redis already running (pid $pid) on 127.0.0.1:$REDIS_PORT"
                return 0
            fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        show_tail "$REDIS_LOG"
        die "Redis (pid $pid) runs but does not answer PING on 127.0.0.1:$REDIS_PORT"
    fi
    check_ports_free redis
    mkdir -p "$REDIS_DIR" "$LOG_DIR" "$RUN_DIR"
    log "starting Redis on 127.0.0.1:$REDIS_PORT"
    spawn "$REDIS_PID" "$REDIS_LOG" "$REDIS_DIR" \
        "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --protected-mode yes \
        --dir "$REDIS_DIR" --daemonize no --supervised no --save "" --appendonly no \
        --logfile "" --loglevel notice
    pid=$(<"$REDIS_PID")
    for ((i = 0; i < START_TIMEOUT * 5; i++)); do
        if redis_serves; then
            log "Redis serves on 127.0.0.1:$REDIS_PORT (pid $pid)"
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            show_tail "$REDIS_LOG"
            die "Redis (pid $pid) exited during startup; log: $REDIS_LOG"
        fi
        sleep 0.2
    done
    show_tail "$REDIS_LOG"
    stop_pid Redis "$pid" 5
    rm -f "$REDIS_PID"
    die "Redis did not answer PING on 127.0.0.1:$REDIS_PORT within ${START_TIMEOUT}s (stopped it)"
}

# --- commands -------------------------------------------------------------------------------

cmd_up() {
    local t0=$SECONDS
    lock_state
    ensure_java
    ensure_redis
    ensure_libs
    check_ports_free kafka
    check_ports_free redis
    start_kafka
    start_redis
    log "up in $((SECONDS - t0)) s: $STATE  (eval \"\$($0 env)\" for the SALESPULSE_* variables)"
}

stop_service() { # kafka|redis
    local svc=$1 pid name pidfile timeout
    if [[ $svc == kafka ]]; then name=Kafka pidfile=$KAFKA_PID timeout=$STOP_TIMEOUT; else name=Redis pidfile=$REDIS_PID timeout=10; fi
    if pid=$(find_pid "$svc"); then
        stop_pid "$name" "$pid" "$timeout"
        log "$name stopped"
    else
        log "$name not running"
    fi
    rm -f "$pidfile"
}

cmd_down() {
    lock_state
    stop_service kafka
    stop_service redis
}

cmd_reset() {
    lock_state
    stop_service kafka
    stop_service redis
    log "wiping data and logs under $STATE (the jars in $LIBS stay)"
    rm -rf -- "$KAFKA_DIR" "$REDIS_DIR" "$LOG_DIR" "$RUN_DIR"
}

cmd_status() {
    local pid ok=0
    if pid=$(find_pid kafka); then
        if [[ -n ${JAVA:-} ]] && compgen -G "$LIBS/*.jar" >/dev/null && kafka_serves; then
            echo "[local] kafka: up (pid $pid, bootstrap 127.0.0.1:$KAFKA_PORT, controller 127.0.0.1:$KAFKA_CONTROLLER_PORT)"
        else
            echo "[local] kafka: running but not serving (pid $pid, 127.0.0.1:$KAFKA_PORT); log: $KAFKA_LOG_DIR/server.log"
            ok=1
        fi
    elif port_open "$KAFKA_PORT"; then
        echo "[local] kafka: down (but port $KAFKA_PORT is in use by another process)"
        ok=1
    else
        echo "[local] kafka: down"
        ok=1
    fi
    if pid=$(find_pid redis); then
        if [[ -n ${REDIS_CLI:-} ]] && redis_serves; then
            echo "[local] redis: up (pid $pid, redis://127.0.0.1:$REDIS_PORT/0)"
        else
            echo "[local] redis: running but not answering PING (pid $pid, 127.0.0.1:$REDIS_PORT); log: $REDIS_LOG"
            ok=1
        fi
    elif port_open "$REDIS_PORT"; then
        echo "[local] redis: down (but port $REDIS_PORT is in use by another process)"
        ok=1
    else
        echo "[local] redis: down"
        ok=1
    fi
    echo "[local] state dir: $STATE"
    return "$ok"
}

cmd_env() {
    printf 'export SALESPULSE_KAFKA_BOOTSTRAP=127.0.0.1:%s\n' "$KAFKA_PORT"
    printf 'export SALESPULSE_REDIS_URL=redis://127.0.0.1:%s/0\n' "$REDIS_PORT"
}

# status must not install anything: use java / redis-cli only if they are already there.
find_tools_quietly() {
    local j
    JAVA=
    if [[ -n ${JAVA_HOME:-} && -x $JAVA_HOME/bin/java ]]; then
        JAVA="$JAVA_HOME/bin/java"
    elif command -v java >/dev/null 2>&1; then
        JAVA=$(command -v java)
    fi
    local major=
    if [[ -n $JAVA ]]; then major=$(java_major "$JAVA"); fi
    if [[ -z $major ]] || ((major < 17)); then
        JAVA=
        for j in /usr/lib/jvm/java-{17,21,25}-openjdk-*/bin/java; do
            if [[ -x $j ]]; then
                JAVA=$j
                break
            fi
        done
    fi
    REDIS_CLI=$(command -v redis-cli || true)
}

main() {
    local cmd=${1:-}
    case $cmd in
    up | down | status | reset | env | kafka-stop | kafka-start) ;;
    -h | --help | help)
        usage
        return 0
        ;;
    *)
        usage
        if [[ -z $cmd ]]; then log "error: no command given"; else log "error: unknown command '$cmd'"; fi
        return 2
        ;;
    esac
    if (($# > 1)); then
        log "error: '$cmd' takes no arguments"
        return 2
    fi
    validate_config
    if [[ $cmd == env ]]; then
        cmd_env
        return
    fi
    set_paths
    case $cmd in
    up) cmd_up ;;
    down) cmd_down ;;
    kafka-stop)
        lock_state
        stop_service kafka
        ;;
    kafka-start)
        lock_state
        ensure_java
        ensure_libs
        check_ports_free kafka
        start_kafka
        ;;
    reset) cmd_reset ;;
    status)
        find_tools_quietly
        cmd_status
        ;;
    esac
}

main "$@"

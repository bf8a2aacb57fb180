# Shell functions shared by deploy/local.sh and deploy/observability.sh. Sourced, not run.
# The caller defines log() (its own prefix) before calling any of these.
# shellcheck shell=bash

APT_UPDATED=

# One command at a time per state dir (fd 9; closed in the daemons so they never hold it).
lock_dir() { # dir wait-seconds who
    mkdir -p "$1"
    exec 9>"$1/.lock"
    flock -w "$2" 9 || die "another $3 is busy with $1 (lock $1/.lock)"
}

die() {
    log "error: $*"
    exit 1
}

check_port() { # name value
    if ! [[ $2 =~ ^[0-9]+$ ]] || ((10#$2 < 1 || 10#$2 > 65535)); then
        die "$1 must be a TCP port (1-65535), got '$2'"
    fi
}

apt_install() { # packages...
    local sudo=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 || die "need to install $* but am not root and have no sudo"
        sudo=(sudo)
    fi
    command -v apt-get >/dev/null 2>&1 || die "need $* but there is no apt-get: install it by hand"
    # Debian's postinst scripts would start the packages' own services (a system Redis on
    # 6379, a Prometheus on 0.0.0.0:9090, ...): forbid that while installing, unless a policy
    # already exists.
    local policy=/usr/sbin/policy-rc.d made_policy=
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null
        "${sudo[@]}" chmod 755 "$policy"
        made_policy=1
    fi
    local rc=0
    {
        if [[ -z $APT_UPDATED ]]; then
            log "apt-get update"
            "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
            APT_UPDATED=1
        fi
        log "apt-get install $*"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends "$@" >&2
    } || rc=$?
    if [[ -n $made_policy ]]; then "${sudo[@]}" rm -f "$policy"; fi
    ((rc == 0)) || die "apt-get install $* failed (exit $rc)"
}

port_open() { # port: something accepts TCP connections on 127.0.0.1:port
    # shellcheck disable=SC2016 # expanded by the inner bash
    timeout 3 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "$1" 2>/dev/null
}

who_listens() { # port -> a hint about who holds it, if ss can tell
    command -v ss >/dev/null 2>&1 || return 0
    ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:(\(.*\))$/\1/p' | head -n 1
}

spawn() { # pidfile logfile workdir cmd...
    local pidfile=$1 logfile=$2 workdir=$3 prog
    shift 3
    prog=$(basename "$1")
    rm -f "$pidfile"
    (
        cd "$workdir" || exit 1
        # shellcheck disable=SC2016 # expanded by the inner bash
        exec setsid nohup bash -c 'echo $$ >"$1"; shift; exec "$@"' _ "$pidfile" "$@" \
            </dev/null >>"$logfile" 2>&1 8>&- 9>&-
    ) &
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s $pidfile ]] && return 0
        sleep 0.05
    done
    die "could not start $prog (no pid file $pidfile after 5 s); log: $logfile"
}

stop_pid() { # name pid timeout
    local name=$1 pid=$2 timeout=$3 i
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < timeout * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    log "$name did not stop within ${timeout}s of SIGTERM: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    die "$name (pid $pid) survived SIGKILL"
}

show_tail() { # file...
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        log "---- last lines of $f ----"
        tail -n 40 "$f" >&2
    done
}

ensure_venv() { # venv-dir pip-target: a virtualenv with the project installed (editable)
    if [[ ! -x $1/bin/python ]]; then
        log "creating the virtualenv $1"
        python3.11 -m venv "$1" 2>/dev/null || python3 -m venv "$1" ||
            die "cannot create a virtualenv: install Python 3.11 with venv (apt-get install python3-venv)"
    fi
    log "installing $2 into $1"
    "$1/bin/python" -m pip install --quiet --disable-pip-version-check -e "$2"
}

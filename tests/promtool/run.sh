#!/usr/bin/env bash
# Checks the Prometheus alert rules and runs their unit tests:
#   promtool check rules deploy/prometheus/rules/*.yml
#   promtool test rules  tests/promtool/*.test.yml
# and, when amtool is there, checks the Alertmanager config.
#
# Installs promtool (Debian package "prometheus") with apt-get when it is missing; as root, or
# through sudo. Set PROMTOOL=/path/to/promtool to use another binary.
# Exit status: 0 when everything passed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

apt_install() {
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            echo "run.sh: $* is not installed and we are not root: install it (apt-get install $*)" >&2
            exit 2
        fi
    fi
    echo "run.sh: installing $* with apt-get" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

promtool="${PROMTOOL:-}"
if [ -z "$promtool" ]; then
    if ! command -v promtool >/dev/null 2>&1; then
        apt_install prometheus
    fi
    promtool="$(command -v promtool)"
fi
echo "run.sh: $("$promtool" --version 2>&1 | head -n 1)"

status=0

shopt -s nullglob
rule_files=(deploy/prometheus/rules/*.yml deploy/prometheus/rules/*.yaml)
test_files=(tests/promtool/*.test.yml tests/promtool/*.test.yaml)
shopt -u nullglob
if [ "${#rule_files[@]}" -eq 0 ] || [ "${#test_files[@]}" -eq 0 ]; then
    echo "run.sh: no rule files or no test files found" >&2
    exit 1
fi

echo "== promtool check rules ${rule_files[*]}"
"$promtool" check rules "${rule_files[@]}" || status=1

echo "== promtool test rules ${test_files[*]}"
"$promtool" test rules "${test_files[@]}" || status=1

if [ -f deploy/prometheus/prometheus.yml ]; then
    # The compose config names hosts (worker, alertmanager) that only exist inside compose and
    # loads rules from /etc/prometheus/rules: check it on a copy pointing at the repo's rules.
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    sed "s#/etc/prometheus/rules/#$repo/deploy/prometheus/rules/#" \
        deploy/prometheus/prometheus.yml >"$tmp/prometheus.yml"
    echo "== promtool check config deploy/prometheus/prometheus.yml"
    "$promtool" check config "$tmp/prometheus.yml" || status=1
fi

amtool="${AMTOOL:-$(command -v amtool || true)}"
if [ -n "$amtool" ] && [ -f deploy/alertmanager/alertmanager.yml ]; then
    echo "== amtool check-config deploy/alertmanager/alertmanager.yml"
    "$amtool" check-config deploy/alertmanager/alertmanager.yml || status=1
fi

if [ "$status" -eq 0 ]; then
    echo "run.sh: all rule checks and rule unit tests passed"
else
    echo "run.sh: FAILED" >&2
fi
exit "$status"

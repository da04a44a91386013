#!/bin/sh
# Install guardian into a virtualenv. Rerunnable: it updates what it installed before.
#
#   ./install.sh                       a checkout-local .venv to try it out; touches no crontab
#   ./install.sh --dev                 the same, plus what the tests need
#   ./install.sh --interval 1m         ... and a crontab line for --config (default etc/demo.toml)
#   ./install.sh --prefix /opt/guardian [--config PATH] [--interval 1m] [--no-cron]
#                                      a system install: the virtualenv in DIR; the example
#                                      config copied to PATH (default /etc/guardian/guardian.toml)
#                                      only if there is none; a crontab line unless --no-cron
#
# PYTHON=/path/to/python3 picks the interpreter (3.11 or newer).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix="" config="" interval="" cron=yes extras="" editable=""

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }
usage() { sed -n '2,13s/^# \{0,1\}//p' "$0"; }
need() { [ $# -ge 2 ] || { echo "install.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) need "$@"; prefix=$2; shift 2 ;;
        --config) need "$@"; config=$2; shift 2 ;;
        --interval) need "$@"; interval=$2; shift 2 ;;
        --no-cron) cron=no; shift ;;
        --dev) extras="[test]"; editable="-e"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done
absolute() { case "$1" in /*) echo "$1" ;; *) echo "$(pwd)/$1" ;; esac; }

usable() {  # usable PYTHON: new enough, and able to make virtualenvs
    "$1" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null
}
for_everyone() {  # for_everyone PYTHON: can an unprivileged user run it? (root only can tell)
    real=$("$1" -c 'import sys; print(sys.executable)') || return 1
    [ "$(id -u)" != 0 ] || runuser -u nobody -- "$real" -c pass 2>/dev/null
}

python=${PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 ||
    die "$python not found; install python3 (3.11 or newer) and python3-venv, or set PYTHON="
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    die "guardian needs Python 3.11 or newer; $python is $("$python" -V 2>&1)"
fi
usable "$python" || die "$python cannot make virtualenvs; on Debian/Ubuntu: apt-get install python3-venv"

if [ -n "$prefix" ]; then
    # A system install is run by cron, maybe as another user: its interpreter must be one
    # every user can run. Some images keep python3 under /root (mode 700).
    if ! for_everyone "$python"; then
        if [ -z "${PYTHON:-}" ] && usable /usr/bin/python3 && for_everyone /usr/bin/python3; then
            say "$("$python" -c 'import sys; print(sys.executable)') can be run by root only; using /usr/bin/python3, which every user can run"
            python=/usr/bin/python3
        else
            say "warning: $python can be run by root only, so only root's crontab can run this guardian; PYTHON=/usr/bin/python3 picks the system's"
        fi
    fi
    prefix=$(absolute "$prefix")
else
    prefix="$here/.venv"
fi

[ -x "$prefix/bin/python" ] || "$python" -m venv "$prefix"
"$prefix/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$prefix/bin/python" -m pip install --quiet --disable-pip-version-check $editable "$here$extras"
guardian="$prefix/bin/guardian"
say "installed $("$guardian" --version) in $prefix"

if [ "$prefix" != "$here/.venv" ]; then
    config=$(absolute "${config:-/etc/guardian/guardian.toml}")
    if [ -e "$config" ]; then
        say "keeping the existing $config"
    else
        install -D -m 0644 "$here/etc/guardian.toml" "$config"
        say "wrote the example config to $config: edit it for your host"
    fi
    [ "$cron" = no ] || interval=${interval:-1m}
elif [ -n "$interval" ]; then
    config=$(absolute "${config:-$here/etc/demo.toml}")
fi

if [ -n "$config" ]; then
    # install --dry-run reads the config, checks it and the interval, and writes nothing.
    "$guardian" install --dry-run --config "$config" --interval "${interval:-1d}" >/dev/null ||
        die "$config needs fixing (see above); then run install.sh again"
fi
if [ -n "$interval" ] && [ "$cron" = yes ]; then
    command -v crontab >/dev/null 2>&1 ||
        die "the crontab program is missing; on Debian/Ubuntu: apt-get install cron (or use --no-cron)"
    "$guardian" install --interval "$interval" --config "$config"
fi

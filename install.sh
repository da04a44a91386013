#!/bin/sh
# Install guardian into a virtualenv. Rerunnable: it updates what it installed before.
#
#   ./install.sh                       a checkout-local .venv to try it out; touches no crontab
#   ./install.sh --dev                 the same, plus what the tests need
#   ./install.sh --interval 1m         ... and a crontab line for --config (default etc/demo.toml)
#   ./install.sh --prefix DIR [--config PATH] [--interval 1m] [--no-cron]
#                                      an install for cron: the virtualenv in DIR, and a config:
#                                      as root, /etc/guardian/guardian.toml (from etc/guardian.toml);
#                                      as another user, ~/.config/guardian/guardian.toml (from
#                                      etc/guardian-user.toml, ~ being the passwd home folder).
#                                      An example it has just copied is checked but never
#                                      scheduled: it says how to, once edited. An existing config
#                                      is checked, and scheduled in this user's crontab only if it
#                                      loads cleanly (--no-cron: never).
#
# PYTHON=/path/to/python3 picks the interpreter (3.11 or newer).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix="" config="" interval="" cron=yes extras="" editable="" fresh=no

say() { echo "install.sh: $*"; }
die() { echo "install.sh: $*" >&2; exit 1; }
usage() { sed -n '2,18s/^# \{0,1\}//p' "$0"; }
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

if [ ! -x "$prefix/bin/python" ]; then
    "$python" -m venv "$prefix"
    # The pip a distribution's venv bundles may be too old to build from pyproject.toml.
    "$prefix/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
fi
"$prefix/bin/python" -m pip install --quiet --disable-pip-version-check $editable "$here$extras"
guardian="$prefix/bin/guardian"
say "installed $("$guardian" --version) in $prefix"

# Where a config lives by default follows guardian's own rule: root's in /etc, any other
# user's under the home folder of the password database (not $HOME, which cron and a login
# shell may not agree on).
home=$("$python" -c 'import os, pwd; print(pwd.getpwuid(os.geteuid()).pw_dir)')
quote() {  # quote WORD: as a shell would need it typed
    case "$1" in
        *[!A-Za-z0-9_./:=@%+,-]*) printf "'%s'" "$(printf %s "$1" | sed "s/'/'\\\\''/g")" ;;
        *) printf %s "$1" ;;
    esac
}

if [ "$prefix" != "$here/.venv" ]; then
    if [ "$(id -u)" = 0 ]; then
        example="$here/etc/guardian.toml"
        config=$(absolute "${config:-/etc/guardian/guardian.toml}")
    else
        example="$here/etc/guardian-user.toml"
        config=$(absolute "${config:-$home/.config/guardian/guardian.toml}")
    fi
    if [ -e "$config" ]; then
        say "keeping the existing $config"
    else
        mkdir -p "$(dirname "$config")"
        # Each ~ of the user example (before a / or a closing ") becomes the home folder:
        # guardian expands ~ in paths, but an argument (supervisord's -c) or an env value
        # reaches the program as it is written.
        "$python" -c 'import re, sys; text = open(sys.argv[1]).read()
home = sys.argv[3].rstrip("/") or "/"
open(sys.argv[2], "x").write(re.sub(r"(?<![\w.~-])~(?=[/\x22])", lambda _: home, text))' \
            "$example" "$config" "$home"
        chmod 0644 "$config"
        fresh=yes
        say "wrote the example config to $config: edit it for this host"
    fi
    [ "$cron" = no ] || interval=${interval:-1m}
elif [ -n "$interval" ]; then
    config=$(absolute "${config:-$here/etc/demo.toml}")
fi

if [ "$fresh" = yes ]; then
    # An example just copied is never scheduled: on most hosts it names programs and paths
    # that are not there yet, and would be a failing job every minute until edited.
    every=${interval:-1m}
    if problem=$("$guardian" install --dry-run --config "$config" --interval "$every" 2>&1 >/dev/null); then
        say "it loads as it is; nothing is scheduled yet."
    else
        say "nothing is scheduled: as it is, it does not load on this host:"
        printf '%s\n' "$problem" | sed 's/^/    /'
    fi
    if [ "$(id -u)" = 0 ]; then edit=sudoedit; else edit=${VISUAL:-${EDITOR:-vi}}; fi
    c=$(quote "$config") g=$(quote "$guardian")
    say "to enable it: edit it, see what it would do, then schedule it:"
    echo "    $edit $c"
    echo "    $g check --dry-run --config $c"
    echo "    $g install --interval $every --config $c"
    exit 0
fi

if [ -n "$config" ]; then
    # install --dry-run reads the config, checks it and the interval, and writes nothing.
    if ! problem=$("$guardian" install --dry-run --config "$config" --interval "${interval:-1d}" 2>&1 >/dev/null); then
        printf '%s\n' "$problem" >&2
        die "$config needs fixing (see above); then run install.sh again"
    fi
fi
if [ -n "$interval" ] && [ "$cron" = yes ]; then
    command -v crontab >/dev/null 2>&1 ||
        die "the crontab program is missing; on Debian/Ubuntu: apt-get install cron (or use --no-cron)"
    "$guardian" install --interval "$interval" --config "$config"
fi

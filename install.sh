#!/bin/sh
# Install guardian into a virtualenv.
#
#   ./install.sh                 a checkout-local .venv to try it out (touches no crontab)
#   ./install.sh --dev           the same, plus what the tests need
#   ./install.sh --prefix DIR    a system install: the virtualenv in DIR, `guardian` in DIR/bin
#
# Rerunnable: it updates what it installed before. PYTHON=/path/to/python3 picks the interpreter.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix="$here/.venv"
extras=""
editable=""

usage() { sed -n '2,8s/^# \{0,1\}//p' "$0"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) [ $# -ge 2 ] || { echo "install.sh: --prefix needs a folder" >&2; exit 2; }
                  prefix=$2; shift 2 ;;
        --prefix=*) prefix=${1#--prefix=}; shift ;;
        --dev) extras="[test]"; editable="-e"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
done

python=${PYTHON:-python3}
command -v "$python" >/dev/null 2>&1 || {
    echo "install.sh: $python not found; install python3 (3.11 or newer), or set PYTHON=" >&2
    exit 1
}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "install.sh: guardian needs Python 3.11 or newer; $python is $("$python" -V 2>&1)" >&2
    exit 1
fi
if ! "$python" -c 'import venv, ensurepip' 2>/dev/null; then
    echo "install.sh: $python cannot make virtualenvs; on Debian/Ubuntu: apt-get install python3-venv" >&2
    exit 1
fi

case "$prefix" in /*) ;; *) prefix="$(pwd)/$prefix" ;; esac
if [ ! -x "$prefix/bin/python" ]; then
    "$python" -m venv "$prefix"
fi
"$prefix/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$prefix/bin/python" -m pip install --quiet --disable-pip-version-check $editable "$here$extras"
echo "install.sh: installed $("$prefix/bin/guardian" --version) in $prefix"

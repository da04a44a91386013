"""How long does a healthy `guardian check` take, beside `supervisorctl status` and an import floor?

    .venv/bin/python bench/check_speed.py [--runs 20] [--baseline DIR] [--write-readme]

All are timed in the same run, interleaved, as whole processes (wall time
from spawn to exit) with their peak resident memory (ru_maxrss from wait4).
The floor is `python -c "import click, psutil"`: the libraries guardian
depended on when the bar was set (filelock, the third, is no longer one), imported
and nothing done. The bar (issue 2): median at
most 1.2 times the floor, and under 30 MiB peak.

``--baseline DIR`` times another guardian source tree beside this one, on the
same target with a state folder of its own (for a change's cost, side by side):

    git worktree add /tmp/before <commit> && .venv/bin/python bench/check_speed.py \
        --baseline /tmp/before
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


# As on a host: bytecode cached (pip compiles it at install; the warm-up run writes it
# for an editable install). A shell that sets PYTHONDONTWRITEBYTECODE would otherwise
# time the compiler, not guardian.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def measure(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float]:
    """Wall seconds and peak RSS in MiB of one run of ``argv``, which must succeed."""
    began = time.perf_counter()
    # cwd "/": `python -m guardian` puts the working folder first on sys.path, so run
    # from a checkout it would import that tree, not the --baseline one.
    proc = subprocess.Popen(
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**ENV, **(env or {})},
        cwd="/",
    )  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - began
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stderr.close()
    if proc.returncode != 0:
        raise SystemExit(f"{argv} failed ({proc.returncode}): {err.decode()}")
    return seconds, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--write-readme", action="store_true")
    parser.add_argument("--baseline", type=Path, help="another guardian source tree to time")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="guardian-bench-"))
    sock = tmp / "s.sock"
    (tmp / "supervisord.conf").write_text(
        f"[unix_http_server]\nfile={sock}\n[supervisord]\nlogfile={tmp}/sd.log\n"
        f"pidfile={tmp}/sd.pid\nuser=root\n[rpcinterface:supervisor]\n"
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface\n"
        f"[supervisorctl]\nserverurl=unix://{sock}\n"
    )
    conf = tmp / "supervisord.conf"
    (tmp / "guardian.toml").write_text(
        f'[guardian]\nstate_dir = "{tmp}/state"\n'
        f'[targets.supervisord]\ncommand = ["{BIN / "supervisord"}", "-c", "{conf}"]\n'
        f'daemonizes = true\npidfile = "{tmp}/sd.pid"\n'
    )
    guardian = [str(BIN / "guardian"), "check", "--config", str(tmp / "guardian.toml")]
    subprocess.run(guardian, check=True)  # starts supervisord: the target every run finds healthy
    pid = int((tmp / "sd.pid").read_text())
    commands = {
        "guardian check (healthy target)": guardian,
        "supervisorctl status": [str(BIN / "supervisorctl"), "-c", str(conf), "status"],
        "import floor: click, psutil": [
            sys.executable, "-c", "import click, psutil"
        ],
    }  # fmt: skip
    envs: dict[str, dict[str, str]] = {}
    if args.baseline is not None:
        (tmp / "baseline.toml").write_text(
            (tmp / "guardian.toml").read_text().replace(f"{tmp}/state", f"{tmp}/state-baseline")
        )
        name = f"baseline: {args.baseline} (healthy target)"
        commands[name] = [sys.executable, "-m", "guardian", "check", "--config",
                          str(tmp / "baseline.toml")]  # fmt: skip
        envs[name] = {"PYTHONPATH": str(args.baseline.resolve())}
    try:
        for name, argv in commands.items():  # warm the page cache and .pyc files
            measure(argv, envs.get(name))
        times: dict[str, list[float]] = {name: [] for name in commands}
        peaks: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.runs):
            for name, argv in commands.items():
                seconds, peak = measure(argv, envs.get(name))
                times[name].append(seconds)
                peaks[name].append(peak)
    finally:
        os.kill(pid, signal.SIGTERM)  # the supervisord this script started, by its pid

    floor = statistics.median(times["import floor: click, psutil"])
    rows = [
        "| command | median wall time | vs. import floor | peak RSS |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in commands:
        median = statistics.median(times[name])
        rows.append(
            f"| {name} | {median * 1000:.1f} ms | {median / floor:.2f}x "
            f"| {max(peaks[name]):.1f} MiB |"
        )
    table = "\n".join(rows)
    print(table)
    python = sys.version.split()[0]
    print(f"\n{args.runs} interleaved runs each, {os.cpu_count()} cores, Python {python}")
    if args.write_readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        block = f"<!-- bench:start -->\n{table}\n<!-- bench:end -->"
        text, n = re.subn(r"<!-- bench:start -->.*?<!-- bench:end -->", block, text, flags=re.S)
        if n != 1:
            raise SystemExit("README.md has no <!-- bench:start --> ... <!-- bench:end --> block")
        readme.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

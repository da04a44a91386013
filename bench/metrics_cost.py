"""What the metrics file and the ping cost a healthy `guardian check`, and what writing the
file with prometheus_client would cost instead.

    .venv/bin/python bench/metrics_cost.py [--runs 20] [--smoke]

All timed in one run, interleaved, as whole processes (wall time from spawn to exit, peak
resident memory from wait4), medians printed side by side:

- check: a healthy check of one target, no metrics_file, no ping_url (today's path)
- check+metrics: the same with metrics_file set
- check+metrics+ping: and ping_url, to a local HTTP server that answers at once
- python: `python -c pass`, the floor
- import guardian.metrics / import prometheus_client: each alone
- write (ours) / write (prometheus_client): the same file for one target, rendered and
  written atomically by guardian.metrics and by prometheus_client's registry and
  write_to_textfile (what the writer would do if it used the library)

Peak RSS from wait4 counts the pages of this benchmark's own process that the child had
before its exec (so its floor is this process's size, not Python's): compare the rows,
not the absolute numbers. Import memory alone, in-process (2 cores, Python 3.11, on the
day it was written): python 11.4 MiB, +guardian.metrics 12.4 MiB, +prometheus_client
22.5 MiB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from benchlib import BIN, ENV, end_targets, finish, machine, run_tag, sleep_argv, write_config

WITH_LIBRARY = """
import sys
from prometheus_client import CollectorRegistry, Counter, Gauge, write_to_textfile
r = CollectorRegistry()
labels = {"target": "agent"}
for name in ("up", "healthy", "held", "gave_up", "watched"):
    Gauge(f"guardian_target_{name}", name, ["target"], registry=r).labels(**labels).set(1)
c = Counter("guardian_target_starts", "starts", ["target", "cause"], registry=r)
for cause in ("died", "unhealthy", "by_hand"):
    c.labels(target="agent", cause=cause).inc(3)
Counter("guardian_target_start_failures", "failures", ["target"], registry=r).labels(
    **labels).inc(1)
Gauge("guardian_last_run_timestamp_seconds", "t", registry=r).set(1.0)
Gauge("guardian_run_duration_seconds", "d", registry=r).set(0.01)
Gauge("guardian_watch_active", "w", registry=r).set(0)
write_to_textfile(sys.argv[1], r)
"""

OURS = """
import sys
from pathlib import Path
from guardian import metrics
from guardian.config import load
config = load(Path(sys.argv[2]), acting=False)
metrics.write(Path(sys.argv[1]), metrics.render(config, metrics.RunFacts(1.0, 0.01, 0)))
"""


def measure(argv: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MiB) of one run of ``argv``, which must exit 0."""
    began = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV,
                            cwd="/")  # fmt: skip
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - began
    assert proc.stderr is not None
    err = proc.stderr.read().decode()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0 or err:
        raise SystemExit(f"{argv} failed ({os.waitstatus_to_exitcode(status)}): {err}")
    return seconds, usage.ru_maxrss / 1024


class _Quiet(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--smoke", action="store_true", help="3 runs: that it works")
    args = parser.parse_args()
    runs = 3 if args.smoke else args.runs
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/ping"
    tmp = Path(tempfile.mkdtemp(prefix="guardian-bench-metrics-"))
    (tmp / "prom").mkdir()
    folders: dict[str, Path] = {}
    targets: dict[str, list[str]] = {}
    metrics = f'metrics_file = "{tmp}/prom/m.prom"'
    kinds = (("check", ""), ("check+metrics", metrics),
             ("check+metrics+ping", f'{metrics}\nping_url = "{url}"'))  # fmt: skip
    for i, (name, extra) in enumerate(kinds):
        folder = tmp / name.replace("+", "-")
        folder.mkdir()
        targets[name] = sleep_argv(3600 + i, run_tag())  # each its own command line
        config = write_config(folder, {"agent": targets[name]})
        text = config.read_text().replace("[guardian]\n", f"[guardian]\n{extra}\n", 1)
        config.write_text(text)
        folders[name] = config
    py = sys.executable
    cases = {name: [str(BIN / "guardian"), "check", "--config", str(config)]
             for name, config in folders.items()}  # fmt: skip
    cases |= {
        "python": [py, "-c", "pass"],
        "import guardian.metrics": [py, "-c", "import guardian.metrics"],
        "import prometheus_client": [py, "-c", "import prometheus_client"],
        "write (ours)": [py, "-c", OURS, str(tmp / "ours.prom"), str(folders["check"])],
        "write (prometheus_client)": [py, "-c", WITH_LIBRARY, str(tmp / "lib.prom")],
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    try:
        for config in folders.values():  # start the target once each, then warm up
            subprocess.run([str(BIN / "guardian"), "check", "--config", str(config)], env=ENV,
                           check=True, capture_output=True)  # fmt: skip
        for argv_ in cases.values():
            measure(argv_)
        for _ in range(runs):
            for name, argv_ in cases.items():
                results[name].append(measure(argv_))
    finally:
        for name, config in folders.items():
            end_targets(config.parent, {"agent": targets[name]})
        server.shutdown()
        finish(tmp, keep=False)
    print(f"{machine()}; {runs} runs each, interleaved; medians")
    print(f"{'':28} {'wall ms':>8} {'peak RSS MiB':>13}")
    for name, values in results.items():
        wall = statistics.median(v[0] for v in values) * 1000
        rss = statistics.median(v[1] for v in values)
        print(f"{name:28} {wall:8.1f} {rss:13.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

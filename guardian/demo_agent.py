"""A tiny agent for the demo: answers HTTP on 127.0.0.1 and touches a heartbeat file.

guardian-demo-agent --port 8765 --heartbeat demo-agent.heartbeat
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import threading
import time
from pathlib import Path

from guardian.heartbeat import keep_beating


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = f"demo agent {os.getpid()} is alive\n".encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: its output file is for real trouble


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--heartbeat", type=Path, default=None)
    args = parser.parse_args(argv)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), _Handler)
    stop = keep_beating(args.heartbeat, every=1.0) if args.heartbeat else threading.Event()

    def shut_down(signum: int, frame: object) -> None:
        stop.set()
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shut_down)
    print(f"demo agent {os.getpid()} listening on 127.0.0.1:{args.port}", flush=True)
    started = time.monotonic()
    server.serve_forever()
    print(f"demo agent {os.getpid()} stopping after {time.monotonic() - started:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

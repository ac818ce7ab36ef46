"""`python -m bench.rest_peer [--port N] [--workers N]`: serve the seed's design with uvicorn.

Binds 127.0.0.1 itself (port 0: any free port) and prints `port N` on stdout
once it is listening, so the benchmark needs no port guessing. uvicorn picks
its fastest parts when installed (httptools, uvloop: bench/requirements.txt),
as `uvicorn app.main:app` does with `uvicorn[standard]`; the access log is
off, as the Flow Manager logs no line per call either.

With `--workers N` (N > 1) it is `uvicorn app.main:app --workers N`: uvicorn's
own supervisor (`Multiprocess`, what `uvicorn.run(..., workers=N)` runs)
spawns N worker processes that accept on the one listening socket, handed
to it here instead of the one `uvicorn.run` would bind, so that port 0 works.
The workers are the supervisor's children (`bench.rest_peer.process` finds them).
"""

from __future__ import annotations

import argparse
import socket
import sys

import uvicorn
from uvicorn.supervisors import Multiprocess


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rest_peer")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    # Workers need the application as an import string: each imports it anew.
    config = uvicorn.Config(
        "bench.rest_peer.app:app",
        log_level="warning",
        access_log=False,
        backlog=2048,
        workers=args.workers,
    )
    print(f"port {listener.getsockname()[1]}", flush=True)
    if args.workers > 1:
        listener.set_inheritable(True)
        Multiprocess(config, sockets=[listener]).run()
        return
    sys.exit(uvicorn.Server(config).run(sockets=[listener]))


if __name__ == "__main__":
    main()

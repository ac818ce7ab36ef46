"""`python -m bench.rest_peer [--port N]`: serve the seed's design with uvicorn, one process.

Binds 127.0.0.1 itself (port 0: any free port) and prints `port N` on stdout
once it is listening, so the benchmark needs no port guessing. uvicorn picks
its fastest parts when installed (httptools, uvloop: bench/requirements.txt),
as `uvicorn app.main:app` does with `uvicorn[standard]`; the access log is
off, as the Flow Manager logs no line per call either.
"""

from __future__ import annotations

import argparse
import socket
import sys

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rest_peer")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", args.port))
    config = uvicorn.Config(
        "bench.rest_peer.app:app", log_level="warning", access_log=False, backlog=2048
    )
    server = uvicorn.Server(config)
    print(f"port {listener.getsockname()[1]}", flush=True)
    sys.exit(server.run(sockets=[listener]))


if __name__ == "__main__":
    main()

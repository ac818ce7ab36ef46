"""`python -m flowservice`: serve the Flow Manager gRPC API."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from flowservice.observability import configure_logging
from flowservice.server import serve
from flowservice.settings import Settings
from flowservice.workers import run_workers


def main(argv: list[str] | None = None) -> None:
    """Parses settings, configures logging and serves until told to stop."""
    args = sys.argv[1:] if argv is None else argv
    settings = Settings.from_args(args)
    configure_logging(settings.log_level, settings.log_format, settings.worker_index)
    if settings.workers > 1:
        sys.exit(run_workers(settings, args))
    if settings.cpu >= 0:
        os.sched_setaffinity(0, {settings.cpu})
    try:
        _runner(settings.event_loop)(serve(settings))
    except RuntimeError as exc:
        # grpc raises RuntimeError when the address cannot be bound.
        logging.getLogger("flowservice").error("cannot serve: %s", exc)
        sys.exit(1)


def _runner(event_loop: str) -> Callable[[Coroutine[Any, Any, None]], None]:
    """`uvloop.run` or `asyncio.run`; uvloop is imported only when it is the one used."""
    if event_loop == "uvloop":
        import uvloop

        return uvloop.run
    return asyncio.run


if __name__ == "__main__":
    main()

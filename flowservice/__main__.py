"""`python -m flowservice`: serve the Flow Manager gRPC API."""

from __future__ import annotations

import asyncio
import logging
import sys

from flowservice.observability import configure_logging
from flowservice.server import serve
from flowservice.settings import Settings


def main(argv: list[str] | None = None) -> None:
    """Parses settings, configures logging and serves until told to stop."""
    settings = Settings.from_args(sys.argv[1:] if argv is None else argv)
    configure_logging(settings.log_level, settings.log_format)
    try:
        asyncio.run(serve(settings))
    except RuntimeError as exc:
        # grpc raises RuntimeError when the address cannot be bound.
        logging.getLogger("flowservice").error("cannot serve: %s", exc)
        sys.exit(1)


if __name__ == "__main__":
    main()

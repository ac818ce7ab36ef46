"""Server settings, from command-line flags with environment-variable defaults."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Settings"]

_ENV_PREFIX = "FLOWMANAGER_"


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything an operator can set; every flag has a `FLOWMANAGER_*` variable."""

    address: str = "127.0.0.1:50051"
    """host:port to listen on; port 0 picks a free port."""
    grace_period: float = 10.0
    """Seconds in-flight calls get to finish after SIGTERM/SIGINT."""
    drain_delay: float = 1.0
    """Seconds between reporting NOT_SERVING and refusing new calls on shutdown."""
    default_max_steps: int = 1_000
    """Task runs allowed per execution when a flow does not set `max_steps`."""
    max_steps_ceiling: int = 10_000
    """The largest `max_steps` a flow may ask for."""
    log_level: str = "INFO"
    """The root log level: DEBUG, INFO, WARNING or ERROR."""

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from `argv` (flags win) and `environ` (defaults to the process's)."""
        env = os.environ if environ is None else environ
        defaults = cls()

        def default(name: str, value: object) -> str:
            return env.get(_ENV_PREFIX + name.upper(), str(value))

        parser = argparse.ArgumentParser(
            prog="python -m flowservice",
            description="Serve the Flow Manager gRPC API.",
            epilog="Each flag can also be set by its FLOWMANAGER_* environment variable.",
        )
        parser.add_argument(
            "--address",
            default=default("address", defaults.address),
            help="host:port to listen on (FLOWMANAGER_ADDRESS; default %(default)s)",
        )
        parser.add_argument(
            "--grace-period",
            type=float,
            default=default("grace_period", defaults.grace_period),
            help="seconds in-flight calls get on shutdown (FLOWMANAGER_GRACE_PERIOD; "
            "default %(default)s)",
        )
        parser.add_argument(
            "--drain-delay",
            type=float,
            default=default("drain_delay", defaults.drain_delay),
            help="seconds between NOT_SERVING and refusing new calls on shutdown "
            "(FLOWMANAGER_DRAIN_DELAY; default %(default)s)",
        )
        parser.add_argument(
            "--step-limit",
            dest="default_max_steps",
            type=int,
            default=default("step_limit", defaults.default_max_steps),
            help="task runs per execution when a flow sets no max_steps "
            "(FLOWMANAGER_STEP_LIMIT; default %(default)s)",
        )
        parser.add_argument(
            "--step-limit-ceiling",
            dest="max_steps_ceiling",
            type=int,
            default=default("step_limit_ceiling", defaults.max_steps_ceiling),
            help="the largest max_steps a flow may set "
            "(FLOWMANAGER_STEP_LIMIT_CEILING; default %(default)s)",
        )
        parser.add_argument(
            "--log-level",
            default=default("log_level", defaults.log_level),
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
            type=str.upper,
            help="log level (FLOWMANAGER_LOG_LEVEL; default %(default)s)",
        )
        args = parser.parse_args(argv)
        if args.default_max_steps < 1 or args.default_max_steps > args.max_steps_ceiling:
            parser.error("--step-limit must be between 1 and --step-limit-ceiling")
        if args.grace_period < 0 or args.drain_delay < 0:
            parser.error("--grace-period and --drain-delay must not be negative")
        return cls(
            address=args.address,
            grace_period=args.grace_period,
            drain_delay=args.drain_delay,
            default_max_steps=args.default_max_steps,
            max_steps_ceiling=args.max_steps_ceiling,
            log_level=args.log_level,
        )

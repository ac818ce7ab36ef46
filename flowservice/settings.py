"""Server settings, from command-line flags with environment-variable defaults.

Every flag `--some-name` has a variable `FLOWMANAGER_SOME_NAME`; a flag given
on the command line wins over the variable, which wins over the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from flowservice.limits import Limits

__all__ = ["Settings"]

_ENV_PREFIX = "FLOWMANAGER_"

# (flag, Limits field, help): every limit an operator may change.
_LIMIT_FLAGS = (
    ("--step-limit", "default_max_steps", "task runs per execution when a flow sets no max_steps"),
    ("--step-limit-ceiling", "max_steps_ceiling", "the largest max_steps a flow may set"),
    ("--max-tasks", "max_tasks", "tasks per flow"),
    ("--max-conditions", "max_conditions", "conditions per flow"),
    ("--max-name-length", "max_name_length", "characters in a name, id or task type"),
    (
        "--max-expression-length",
        "max_expression_length",
        "characters in one CEL expression",
    ),
    ("--max-attempts", "max_attempts", "the largest retry.max_attempts a task may set"),
    ("--max-output-bytes", "max_output_bytes", "bytes of one task output (compact JSON)"),
    ("--max-request-bytes", "max_request_bytes", "bytes of one request message"),
    (
        "--max-concurrent-executions",
        "max_concurrent_executions",
        "executions at once; past it calls get RESOURCE_EXHAUSTED",
    ),
    ("--max-run-time", "max_run_time", "seconds any execution may run"),
    (
        "--max-concurrent-rpcs",
        "max_concurrent_rpcs",
        "calls at once, any method; past it calls get RESOURCE_EXHAUSTED",
    ),
    (
        "--max-concurrent-streams",
        "max_concurrent_streams",
        "HTTP/2 streams (calls) per connection (SETTINGS_MAX_CONCURRENT_STREAMS)",
    ),
    ("--max-connections", "max_connections", "client connections at once"),
    (
        "--max-connection-idle",
        "max_connection_idle",
        "seconds a connection without calls stays open",
    ),
    ("--max-connection-age", "max_connection_age", "seconds a connection may live"),
    ("--keepalive-time", "keepalive_time", "seconds of silence before the server pings"),
    (
        "--min-ping-interval",
        "min_ping_interval",
        "fewest seconds between a client's pings when it has no call",
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything an operator can set."""

    address: str = "127.0.0.1:50051"
    """host:port to listen on; port 0 picks a free port."""
    grace_period: float = 10.0
    """Seconds in-flight calls get to finish after SIGTERM/SIGINT."""
    drain_delay: float = 1.0
    """Seconds between reporting NOT_SERVING and refusing new calls on shutdown."""
    log_level: str = "INFO"
    """The root log level: DEBUG, INFO, WARNING or ERROR."""
    log_format: str = "console"
    """`console` (readable lines) or `json` (one JSON object a line)."""
    task_threads: int = 64
    """Worker threads for sync task implementations."""
    metrics_address: str = ""
    """host:port serving Prometheus metrics at /metrics (`make run` uses
    127.0.0.1:9464); empty, the default, turns them off, so that several
    server processes on one machine never fight over a port."""
    workers: int = 1
    """Server processes sharing the address (SO_REUSEPORT); see `flowservice.workers`."""
    pin_workers: bool = True
    """With several workers, pin each to its own core."""
    cpu: int = -1
    """Pin this process to this core; -1 leaves it to the kernel."""
    reuse_port: bool = False
    """Share the port with other processes (SO_REUSEPORT); set for `--workers`.
    Off otherwise, so a second server on a taken port fails instead of
    silently splitting the traffic."""
    otlp_endpoint: str = ""
    """OTLP/gRPC collector to export traces to; empty (the default) turns tracing off."""
    limits: Limits = field(default_factory=Limits)
    """The bounds every request and execution must respect."""

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from `argv` (flags win) and `environ` (defaults to the process's)."""
        env = os.environ if environ is None else environ
        defaults = cls()
        parser = argparse.ArgumentParser(
            prog="python -m flowservice",
            description="Serve the Flow Manager gRPC API.",
            epilog="Each flag can also be set by its FLOWMANAGER_* environment variable, "
            "e.g. FLOWMANAGER_MAX_RUN_TIME for --max-run-time.",
        )

        # Each variable that is set becomes its flag, placed before the
        # command line's own: argparse then checks its type and choices like
        # any flag's, and a flag given on the command line still wins.
        from_env: list[str] = []

        def add(flag: str, value: object, kind: type, help_text: str, **extra: object) -> None:
            variable = _ENV_PREFIX + flag.removeprefix("--").replace("-", "_").upper()
            if variable in env:
                from_env.extend((flag, env[variable]))
            parser.add_argument(
                flag,
                type=kind,
                default=value,
                help=f"{help_text} ({variable}; default %(default)s)",
                **extra,  # type: ignore[arg-type]
            )

        add("--address", defaults.address, str, "host:port to listen on")
        add("--grace-period", defaults.grace_period, float, "seconds in-flight calls get")
        add(
            "--drain-delay",
            defaults.drain_delay,
            float,
            "seconds between NOT_SERVING and refusing new calls",
        )
        add(
            "--log-level",
            defaults.log_level,
            str.upper,  # type: ignore[arg-type]
            "log level",
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        )
        add(
            "--log-format",
            defaults.log_format,
            str,
            "log line format",
            choices=["console", "json"],
        )
        add("--task-threads", defaults.task_threads, int, "worker threads for sync tasks")
        add("--workers", defaults.workers, int, "server processes sharing the port")
        parser.add_argument(
            "--no-pin-workers",
            dest="pin_workers",
            action="store_false",
            help="with --workers, leave each worker's core to the kernel",
        )
        add("--cpu", defaults.cpu, int, "pin this process to one core (-1: no pinning)")
        parser.add_argument(
            "--reuse-port",
            action="store_true",
            help="share the port with other server processes (set by --workers)",
        )
        add(
            "--metrics-address",
            defaults.metrics_address,
            str,
            "host:port for Prometheus /metrics; empty for none",
        )
        add(
            "--otlp-endpoint",
            # The standard OpenTelemetry variable works too.
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT", defaults.otlp_endpoint),
            str,
            "OTLP/gRPC endpoint for traces (also OTEL_EXPORTER_OTLP_ENDPOINT); empty for none",
        )
        for flag, name, help_text in _LIMIT_FLAGS:
            value = getattr(defaults.limits, name)
            add(flag, value, type(value), help_text, dest=name)

        args = parser.parse_args([*from_env, *(sys.argv[1:] if argv is None else argv)])
        limits = Limits(**{name: getattr(args, name) for _, name, _ in _LIMIT_FLAGS})
        for field_ in dataclasses.fields(limits):
            if getattr(limits, field_.name) <= 0:
                parser.error(f"{field_.name} must be positive")
        if limits.default_max_steps > limits.max_steps_ceiling:
            parser.error("--step-limit must not exceed --step-limit-ceiling")
        if args.grace_period < 0 or args.drain_delay < 0 or args.task_threads < 1:
            parser.error("--grace-period and --drain-delay must be >= 0, --task-threads >= 1")
        if args.workers < 1:
            parser.error("--workers must be at least 1")
        return cls(
            address=args.address,
            grace_period=args.grace_period,
            drain_delay=args.drain_delay,
            log_level=args.log_level,
            log_format=args.log_format,
            task_threads=args.task_threads,
            metrics_address=args.metrics_address,
            workers=args.workers,
            pin_workers=args.pin_workers,
            cpu=args.cpu,
            reuse_port=args.reuse_port,
            otlp_endpoint=args.otlp_endpoint,
            limits=limits,
        )

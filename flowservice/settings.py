"""Server settings, from command-line flags with environment-variable defaults.

Each setting is declared once, as a field of `Settings` made with `setting()`
(or, for a limit, one line of `_LIMIT_FLAGS`); its flag, its variable and its
`--help` line are derived from that declaration:

    grace_period: float = setting(10.0, "seconds in-flight calls get")
    # -> flag --grace-period, variable FLOWMANAGER_GRACE_PERIOD, a line in --help

Adding a setting is that one edit (plus a line in `_check` if it has bounds,
and its row in docs/operating.md, which a test checks). Every flag
`--some-name` has a variable `FLOWMANAGER_SOME_NAME`; a flag given on the
command line wins over the variable, which wins over the default. A switch
(a bool setting: `--reuse-port`, `--no-pin-workers`) is turned on by its
variable set to 1, true, yes or on, and left alone by 0, false, no, off or "".
A list (`setting((), ..., many=True)`: `--allow-target`) takes its flag once
per value, and its variable (plural: FLOWMANAGER_ALLOW_TARGETS) a
comma-separated list; values from both are kept, the variable's first.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flowservice.limits import Limits
from flowservice.outbound.targets import OutboundPolicy
from flowservice.security import SecuritySettings

__all__ = ["Settings"]

_ENV_PREFIX = "FLOWMANAGER_"
_OPTION = "option"  # the key of a field's metadata that holds its `_Option`
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Option:
    """How one setting appears on the command line and in the environment."""

    help: str
    flag: str = ""
    """The flag; empty: `--` and the field's name with dashes."""
    parse: Callable[[str], Any] | None = None
    """Turns the text into the value; None: the type of the default."""
    choices: tuple[str, ...] = ()
    also_env: str = ""
    """Another variable that sets the default, below the FLOWMANAGER_* one."""
    many: bool = False
    """A list: the flag repeats, the variable (its name plural) is comma-separated."""


def setting(
    default: _T,
    help: str,
    *,
    flag: str = "",
    parse: Callable[[str], Any] | None = None,
    choices: Sequence[str] = (),
    also_env: str = "",
    many: bool = False,
) -> _T:
    """A `Settings` field with its flag: `--help` shows `help`, the variable and the default."""
    option = _Option(help, flag, parse, tuple(choices), also_env, many)
    return field(default=default, metadata={_OPTION: option})


# (flag, Limits field, help): every limit an operator may change.
_LIMIT_FLAGS = (
    ("--step-limit", "default_max_steps", "task runs per execution when a flow sets no max_steps"),
    ("--step-limit-ceiling", "max_steps_ceiling", "the largest max_steps a flow may set"),
    ("--max-tasks", "max_tasks", "tasks per flow"),
    ("--max-conditions", "max_conditions", "conditions per flow"),
    ("--max-name-length", "max_name_length", "characters in a name, id or task type"),
    ("--max-expression-length", "max_expression_length", "characters in one CEL expression"),
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
        "--max-results-bytes",
        "max_results_bytes",
        "bytes of all task outputs of one execution (compact JSON)",
    ),
    (
        "--max-expression-seconds",
        "max_expression_seconds",
        "CPU seconds one execution may spend evaluating expressions",
    ),
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
    ("--max-flow-id-length", "max_flow_id_length", "characters in a registry flow id"),
    (
        "--max-flows-page-size",
        "max_flows_page_size",
        "flows or versions per page of ListFlows and ListFlowVersions",
    ),
    ("--max-cached-plans", "max_cached_plans", "compiled flows kept for reuse (an LRU)"),
)


# (flag, SecuritySettings field, help): TLS, authentication and exposure; see
# docs/security.md. Each takes a path or a value; "" (the default) leaves it off.
_SECURITY_FLAGS = (
    ("--tls-cert", "tls_cert", "PEM certificate chain; with --tls-key, serve TLS"),
    ("--tls-key", "tls_key", "PEM private key of --tls-cert"),
    ("--tls-client-ca", "tls_client_ca", "PEM CA bundle; require client certificates it signs"),
    ("--jwt-public-key", "jwt_public_key", "PEM public key that signs bearer JWTs"),
    ("--jwt-jwks", "jwt_jwks", "JWKS file of public keys that sign bearer JWTs"),
    ("--jwt-issuer", "jwt_issuer", "required JWT iss"),
    ("--jwt-audience", "jwt_audience", "required JWT aud"),
    ("--static-tokens", "static_tokens", "file of name:sha256hex bearer tokens"),
    ("--auth-policy", "auth_policy", "YAML or JSON file: which identity may call which RPC"),
    ("--metrics-tls-cert", "metrics_tls_cert", "PEM certificate chain; serve /metrics on HTTPS"),
    ("--metrics-tls-key", "metrics_tls_key", "PEM private key of --metrics-tls-cert"),
    (
        "--metrics-tls-client-ca",
        "metrics_tls_client_ca",
        "PEM CA bundle; /metrics requires client certificates it signs",
    ),
)


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything an operator can set."""

    address: str = setting("127.0.0.1:50051", "host:port to listen on")
    """host:port to listen on; port 0 picks a free port."""
    grace_period: float = setting(10.0, "seconds in-flight calls get")
    """Seconds in-flight calls get to finish after SIGTERM/SIGINT."""
    drain_delay: float = setting(1.0, "seconds between NOT_SERVING and refusing new calls")
    """Seconds between reporting NOT_SERVING and refusing new calls on shutdown."""
    log_level: str = setting(
        "INFO", "log level", parse=str.upper, choices=("DEBUG", "INFO", "WARNING", "ERROR")
    )
    """The root log level: DEBUG, INFO, WARNING or ERROR."""
    log_format: str = setting("console", "log line format", choices=("console", "json"))
    """`console` (readable lines) or `json` (one JSON object a line)."""
    event_loop: str = setting("uvloop", "the asyncio event loop", choices=("uvloop", "asyncio"))
    """`uvloop` (libuv's loop: faster calls, see docs/performance.md) or `asyncio`
    (the standard library's, to rule the loop out when chasing a problem)."""
    task_threads: int = setting(64, "worker threads for sync tasks")
    """Worker threads for sync task implementations."""
    metrics_address: str = setting("", "host:port for Prometheus /metrics; empty for none")
    """host:port serving Prometheus metrics at /metrics (`make run` uses
    127.0.0.1:9464); empty, the default, turns them off, so that several
    server processes on one machine never fight over a port."""
    workers: int = setting(1, "server processes sharing the port")
    """Server processes sharing the address (SO_REUSEPORT); see `flowservice.workers`."""
    pin_workers: bool = setting(
        True, "with --workers, leave each worker's core to the kernel", flag="--no-pin-workers"
    )
    """With several workers, pin each to its own core."""
    cpu: int = setting(-1, "pin this process to one core (-1: no pinning)")
    """Pin this process to this core; -1 leaves it to the kernel."""
    reuse_port: bool = setting(
        False, "share the port with other server processes (set by --workers)"
    )
    """Share the port with other processes (SO_REUSEPORT); set for `--workers`.
    Off otherwise, so a second server on a taken port fails instead of
    silently splitting the traffic."""
    worker_index: int = setting(-1, "this process's number among --workers (set by them)")
    """Which of `--workers` this process is, named in its log lines; -1 for a
    server on its own."""
    otlp_endpoint: str = setting(
        "",
        "OTLP/gRPC endpoint for traces (also OTEL_EXPORTER_OTLP_ENDPOINT); empty for none",
        also_env="OTEL_EXPORTER_OTLP_ENDPOINT",  # the standard OpenTelemetry variable
    )
    """OTLP/gRPC collector to export traces to; empty (the default) turns tracing off."""
    max_worker_streams: int = setting(1000, "task workers connected at once (WorkerService.Work)")
    """Task workers connected at once; past it `Work` gets RESOURCE_EXHAUSTED
    (docs/workers.md)."""
    max_worker_backlog: int = setting(
        10000, "worker task runs waiting for a worker, all queues together"
    )
    """Worker task runs waiting for a worker, all queues together; past it a
    run fails at once with error type `BacklogFull`."""
    allow_targets: tuple[str, ...] = setting(
        (), "host:port, host:* or URL prefix flows may call", flag="--allow-target", many=True
    )
    """Outbound targets the `grpc` and `http` tasks may call (none by default);
    see `flowservice.outbound.targets`."""
    targets: tuple[str, ...] = setting(
        (), "NAME=ADDRESS_OR_URL: a target flows call by name", flag="--target", many=True
    )
    """Named outbound targets, allowed by being named."""
    outbound_ca: str = setting(
        "", "PEM CA bundle trusted for grpcs:// and https:// targets; none: the system's"
    )
    """The CAs outbound TLS trusts; empty (the default): the system's."""
    descriptor_sets: tuple[str, ...] = setting(
        (),
        "FileDescriptorSet file for grpc tasks to services without reflection",
        flag="--descriptor-set",
        many=True,
    )
    """Descriptor sets (`protoc --descriptor_set_out`, grpcurl's -protoset) for `grpc` tasks."""
    task_modules: tuple[str, ...] = setting(
        (), "module whose register(registry) adds task types", flag="--task-module", many=True
    )
    """Python modules with a `register(registry)` function, imported at start-up."""
    store: str = setting(
        ".data/flowmanager.db",
        "SQLite file of the execution history, memory, or a postgresql:// URL",
    )
    """Where executions are recorded (docs/history.md): the path of an SQLite
    file, made with its directory if missing, `memory` to keep them only
    in this process, or a `postgresql://` URL that several server processes
    (replicas, docs/replicas.md) share."""
    retention: float = setting(7.0, "days a finished execution stays in the history")
    """Days a finished execution stays in the history; older ones are deleted
    in the background."""
    lease_seconds: float = setting(
        6.0, "seconds a process holds a running execution unrenewed before another takes it over"
    )
    """How long a server process's hold on a running execution lasts without
    a renewal (renewed every third of it): after a crash, another process
    sharing the store (or this one, restarted) takes the execution over and
    resumes it within about this long (docs/durability.md)."""
    http_address: str = setting(
        "", "host:port for Connect, gRPC-Web and the web console; empty for none"
    )
    """host:port of the HTTP port (docs/http.md): the same API over Connect and
    gRPC-Web, and the web console at `/` (`make run` uses 127.0.0.1:8080);
    empty, the default, serves gRPC only."""
    cors_origins: tuple[str, ...] = setting(
        (), "browser origin allowed to call the HTTP port (CORS)", flag="--cors-origin", many=True
    )
    """Origins (`https://console.example.com`) whose pages may call the HTTP
    port from a browser; none by default, so only the console it serves can."""
    console_dir: str = setting("", "the built web console the HTTP port serves; none: console/dist")
    """The directory of the built web console; empty: `console/dist` of the
    source tree."""
    limits: Limits = field(default_factory=Limits)
    """The bounds every request and execution must respect."""
    security: SecuritySettings = field(default_factory=SecuritySettings)
    """TLS, authentication and authorization (docs/security.md); all off by default."""

    @classmethod
    def from_args(
        cls, argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
    ) -> Settings:
        """Settings from `argv` (flags win) and `environ` (defaults to the process's)."""
        env = os.environ if environ is None else environ
        parser = argparse.ArgumentParser(
            prog="python -m flowservice",
            description="Serve the Flow Manager gRPC API.",
            epilog="Each flag can also be set by its FLOWMANAGER_* environment variable, "
            "e.g. FLOWMANAGER_MAX_RUN_TIME for --max-run-time; a switch by setting it to 1.",
        )
        # Each variable that is set becomes its flag, placed before the
        # command line's own: argparse then checks its type and choices like
        # any flag's, and a flag given on the command line still wins.
        from_env: list[str] = []
        for flag in _flags():
            flag.add_to(parser)
            from_env += flag.from_env(env, parser)
        args = parser.parse_args([*from_env, *(sys.argv[1:] if argv is None else argv)])
        limits = Limits(**{name: getattr(args, name) for _, name, _ in _LIMIT_FLAGS})
        settings = cls(
            limits=limits,
            security=SecuritySettings(
                **{name: getattr(args, name) for _, name, _ in _SECURITY_FLAGS},
                reflection=args.reflection == "on",
            ),
            **{name: getattr(args, name) for name in _setting_fields()},
        )
        _check(settings, parser)
        return settings

    @staticmethod
    def variables() -> dict[str, str]:
        """Every flag and its FLOWMANAGER_* variable, for documentation and its tests."""
        return {flag.flag: flag.variable for flag in _flags()}


def _check(settings: Settings, parser: argparse.ArgumentParser) -> None:
    """Exits with a usage error when values are out of their bounds."""
    limits = settings.limits
    for field_ in dataclasses.fields(limits):
        if getattr(limits, field_.name) <= 0:
            parser.error(f"{field_.name} must be positive")
    if limits.default_max_steps > limits.max_steps_ceiling:
        parser.error("--step-limit must not exceed --step-limit-ceiling")
    if settings.grace_period < 0 or settings.drain_delay < 0 or settings.task_threads < 1:
        parser.error("--grace-period and --drain-delay must be >= 0, --task-threads >= 1")
    if settings.workers < 1:
        parser.error("--workers must be at least 1")
    if settings.max_worker_streams < 1 or settings.max_worker_backlog < 1:
        parser.error("--max-worker-streams and --max-worker-backlog must be at least 1")
    if settings.retention <= 0 or not settings.store:
        parser.error("--retention must be positive and --store not empty")
    if settings.lease_seconds <= 0:
        parser.error("--lease-seconds must be positive")
    for problem in settings.security.problems():
        parser.error(problem)
    for origin in settings.cors_origins:
        if not re.fullmatch(r"https?://[^/\s*]+", origin):
            parser.error(f"--cors-origin {origin!r}: an origin is scheme://host[:port], no path")
    try:
        OutboundPolicy.parse(settings.allow_targets, settings.targets)
    except ValueError as exc:
        parser.error(f"--allow-target/--target: {exc}")


@dataclass(frozen=True, slots=True)
class _Flag:
    """One command-line flag and its variable, derived from a declaration."""

    flag: str
    dest: str
    default: Any
    option: _Option

    @property
    def variable(self) -> str:
        name = _ENV_PREFIX + self.flag.removeprefix("--").replace("-", "_").upper()
        return name + "S" if self.option.many else name

    @property
    def switch(self) -> bool:
        return isinstance(self.default, bool)

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        if self.switch:
            action = "store_false" if self.default else "store_true"
            help_text = f"{self.option.help} ({self.variable}=1)"
            parser.add_argument(self.flag, dest=self.dest, action=action, help=help_text)
            return
        if self.option.many:
            parser.add_argument(
                self.flag,
                dest=self.dest,
                action=_Append,
                default=(),
                metavar=self.flag.removeprefix("--").replace("-", "_").upper(),
                help=f"{self.option.help}; repeatable ({self.variable}, comma-separated)",
            )
            return
        shown = "%(default)s" if self.default != "" else "none"
        parser.add_argument(
            self.flag,
            dest=self.dest,
            type=self.option.parse or type(self.default),
            default=self.default,
            choices=self.option.choices or None,
            help=f"{self.option.help} ({self.variable}; default {shown})",
        )

    def from_env(self, env: Mapping[str, str], parser: argparse.ArgumentParser) -> list[str]:
        """The flag (and value) that the environment sets; [] when it sets none."""
        if self.variable in env:
            text = env[self.variable]
        elif self.option.also_env in env:
            text = env[self.option.also_env]
        else:
            return []
        if self.option.many:
            return [arg for item in text.split(",") if item.strip() for arg in (self.flag, item)]
        if not self.switch:
            return [self.flag, text]
        if text.strip().lower() in ("1", "true", "yes", "on"):
            return [self.flag]
        if text.strip().lower() in ("0", "false", "no", "off", ""):
            return []
        parser.error(f"{self.variable}: expected 1 or 0 (true or false), got {text!r}")


class _Append(argparse.Action):
    """Adds each value of a repeated flag to a tuple (settings are frozen)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, (*getattr(namespace, self.dest), str(values).strip()))


def _setting_fields() -> Iterator[str]:
    return (f.name for f in dataclasses.fields(Settings) if _OPTION in f.metadata)


def _flags() -> Iterator[_Flag]:
    """Every flag, in `--help` order: the settings, then the limits."""
    for field_ in dataclasses.fields(Settings):
        option = field_.metadata.get(_OPTION)
        if option is not None:
            flag = option.flag or "--" + field_.name.replace("_", "-")
            yield _Flag(flag, field_.name, field_.default, option)
    defaults = Limits()
    for flag, name, help_text in _LIMIT_FLAGS:
        yield _Flag(flag, name, getattr(defaults, name), _Option(help_text))
    security = SecuritySettings()
    for flag, name, help_text in _SECURITY_FLAGS:
        yield _Flag(flag, name, getattr(security, name), _Option(help_text))
    reflection = _Option(
        "serve gRPC server reflection (grpcurl list/describe)", choices=("on", "off")
    )
    yield _Flag("--reflection", "reflection", "on", reflection)

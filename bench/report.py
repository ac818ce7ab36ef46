"""The results of a run: figures with their targets, the printed table, JSON and Markdown.

A `Figure` is one number in the table. Targets come from the issue that
asked for the benchmark; they are judged on full runs only (a smoke run's
tiny flows and counts say nothing about them).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import re
import statistics
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.engine_micro import EngineMicroResult
from bench.flows import REPO_ROOT
from bench.history import StoreResult
from bench.measure import (
    CHECK,
    EXECUTE,
    REST,
    REST_WORKER_COUNT,
    REST_WORKERS,
    FlowSizePoint,
    LoadPoint,
    MemoryResult,
    MulticoreResult,
    StreamResult,
)
from bench.profiling import ProfileSummary

__all__ = [
    "DOCS_BEGIN",
    "DOCS_END",
    "Figure",
    "Results",
    "Target",
    "machine_info",
    "render_markdown",
    "render_table",
    "update_docs",
    "write_json",
]

DOCS_BEGIN = "<!-- bench:results:begin (written by `make bench`; do not edit by hand) -->"
DOCS_END = "<!-- bench:results:end -->"
KB = 1024

LAYOUTS = {
    "workers1": "--workers 1 (1 process, not pinned: today's server)",
    "workers2": "--workers 2 (2 processes on 1 port, 1 pinned per core)",
    "workers1_pinned": "1 process pinned to 1 core",
    "workers2_unpinned": "2 processes on 1 port, not pinned",
}


@dataclass(frozen=True, slots=True)
class Target:
    """A bound a figure should respect."""

    op: str
    """">=" or "<="."""
    bound: float
    """The bound, in the figure's unit."""

    def met(self, value: float) -> bool:
        """Whether `value` respects the bound."""
        return value >= self.bound if self.op == ">=" else value <= self.bound

    def __str__(self) -> str:
        return f"{'≥' if self.op == '>=' else '≤'} {_number(self.bound)}"


@dataclass(frozen=True, slots=True)
class Figure:
    """One row of the table."""

    key: str
    """Stable identifier, for JSON readers and the smoke test."""
    label: str
    """What it is, for people."""
    value: float
    """The number."""
    unit: str
    """Its unit."""
    detail: str = ""
    """How it was obtained, or the numbers around it."""
    target: Target | None = None
    """The bound it should respect, if any."""
    passed: bool | None = None
    """Whether it did; None when there is no target or the run is a smoke run."""


@dataclass(frozen=True, slots=True)
class Results:
    """Everything one run measured."""

    mode: str
    machine: dict[str, Any]
    config: dict[str, Any]
    transport: tuple[LoadPoint, ...]
    engine: EngineMicroResult
    flow_sizes: tuple[FlowSizePoint, ...]
    stream: StreamResult
    memory: MemoryResult
    multicore: MulticoreResult
    store: StoreResult
    execute_profile: ProfileSummary | None
    engine_profile: ProfileSummary | None
    profile_note: str
    elapsed_seconds: float
    rest_note: str = ""
    """Why the REST peer was not measured; "" when it was."""

    def figures(self) -> list[Figure]:
        """Every figure, in table order, judged against its target on full runs."""
        figures = [
            *_transport_figures(self.transport),
            *self._other_figures(),
            *_store_figures(self.store),
        ]
        if self.mode != "full":
            return figures
        return [
            dataclasses.replace(figure, passed=figure.target.met(figure.value))
            if figure.target
            else figure
            for figure in figures
        ]

    def _other_figures(self) -> list[Figure]:
        engine = self.engine
        sizes = self.flow_sizes
        mid, large = sizes[-2], sizes[-1]
        memory = self.memory
        multi = self.multicore
        return [
            Figure(
                "engine.us_per_step",
                "Engine overhead per task step (in-process, no gRPC)",
                engine.us_per_step,
                "µs",
                f"median of {len(engine.seconds)} runs of a {engine.steps:,}-step chain of "
                f"no-op tasks; best {engine.us_per_step_best:.2f} µs",
                Target("<=", 8),
            ),
            *(
                Figure(
                    f"flow_size.{point.tasks}",
                    f"Linear flow of {point.tasks:,} tasks, server side",
                    point.median_server_seconds,
                    "s",
                    f"median of {len(point.server_seconds)} (range "
                    f"{min(point.server_seconds):.3g}-{max(point.server_seconds):.3g} s); "
                    f"client round trip {point.median_client_seconds:.3g} s",
                    Target("<=", 0.2) if point is large else None,
                )
                for point in sizes
            ),
            Figure(
                "flow_size.ratio",
                f"{large.tasks:,}-task ÷ {mid.tasks:,}-task flow, server time",
                large.median_server_seconds / mid.median_server_seconds,
                "x",
                f"{large.tasks / mid.tasks:g}x the tasks",
                Target("<=", 11),
            ),
            Figure(
                "stream.events_per_s",
                "ExecuteStream events/s on one stream (h2load)",
                self.stream.h2load_events_per_s,
                "events/s",
                f"{self.stream.events:,} events of a {self.stream.tasks:,}-task flow, "
                f"median of {len(self.stream.h2load_seconds)} streams "
                "("
                + ", ".join(
                    f"{self.stream.events / seconds:,.0f}" for seconds in self.stream.h2load_seconds
                )
                + f"); server CPU {self.stream.server_cpu_us_per_event:.0f} µs per event",
                Target(">=", 20_000),
            ),
            Figure(
                "stream.events_per_s.python",
                "ExecuteStream events/s on one stream (Python client)",
                self.stream.python_events_per_s,
                "events/s",
                "second opinion; the Python client may be the bottleneck",
            ),
            Figure(
                "memory.kb_per_execution",
                "Memory per sleeping in-flight execution",
                memory.bytes_per_execution / KB,
                "KB",
                f"RSS {memory.baseline_rss_bytes / 2**20:.1f} MiB → "
                f"{memory.in_flight_rss_bytes / 2**20:.1f} MiB with "
                f"{memory.in_flight:,} executions asleep in a task",
                Target("<=", 22),
            ),
            *(
                Figure(
                    f"multicore.{label}",
                    f"Execute(seed), {LAYOUTS[label]}",
                    multi.rps[label],
                    "calls/s",
                    f"{multi.in_flight} in flight over {multi.connections} connections; "
                    f"server {multi.cores_used[label]:.2f} cores busy (split "
                    + "/".join(f"{share:.0%}" for share in multi.cpu_share[label])
                    + f"), rest of machine {multi.other_cpu_cores[label]:.2f}",
                )
                for label in LAYOUTS
            ),
            Figure(
                "multicore.ratio",
                "--workers 2 ÷ --workers 1, Execute(seed) throughput",
                _median_ratio(multi.round_rps["workers2"], multi.round_rps["workers1"]),
                "x",
                "median of the rounds' ratios; --workers 1 is today's single unpinned process; "
                f"{multi.discarded_rounds} noisy rounds redone",
                Target(">=", 1.5),
            ),
            Figure(
                "multicore.ratio_pinned",
                "2 pinned processes ÷ 1 pinned process",
                _median_ratio(multi.round_rps["workers2"], multi.round_rps["workers1_pinned"]),
                "x",
                "how well the work splits over cores",
            ),
            Figure(
                "multicore.ratio_unpinned",
                "2 unpinned processes ÷ 1 unpinned process",
                _median_ratio(multi.round_rps["workers2_unpinned"], multi.round_rps["workers1"]),
                "x",
                "--workers 2 --no-pin-workers vs --workers 1",
            ),
            *_whole_machine_figures(multi),
        ]

    def to_json(self) -> dict[str, Any]:
        """Everything, as JSON-ready data."""
        return {
            "mode": self.mode,
            "machine": self.machine,
            "config": self.config,
            "elapsed_seconds": self.elapsed_seconds,
            "figures": [
                {
                    **dataclasses.asdict(figure),
                    "target": str(figure.target) if figure.target else None,
                }
                for figure in self.figures()
            ],
            "transport": [
                {**dataclasses.asdict(point), "rps": point.rps} for point in self.transport
            ],
            "engine": {
                **dataclasses.asdict(self.engine),
                "us_per_step": self.engine.us_per_step,
            },
            "flow_sizes": [dataclasses.asdict(point) for point in self.flow_sizes],
            "stream": dataclasses.asdict(self.stream),
            "memory": dataclasses.asdict(self.memory),
            "multicore": dataclasses.asdict(self.multicore),
            "store": {
                **dataclasses.asdict(self.store),
                "round_ratios": self.store.round_ratios,
                "ratio": self.store.ratio,
            },
            "rest": {"note": self.rest_note},
            "profile": {
                "note": self.profile_note,
                "execute": _profile_json(self.execute_profile),
                "engine": _profile_json(self.engine_profile),
            },
        }

    def execute_cpu_us(self) -> float:
        """Server CPU per Execute(seed) call, h2load at 8 in flight (or the nearest)."""
        return _point(self.transport, "h2load", EXECUTE, 8).server_cpu_us_per_call


def _whole_machine_figures(multi: MulticoreResult) -> list[Figure]:
    """The REST peer with its workers, and our best layout over it; none when not measured.

    "Best" is the layout with the most calls/s over all rounds; its ratio to
    the REST peer is the median of the rounds' ratios, as for the other ratios.
    """
    if REST_WORKERS not in multi.rps:
        return []
    best = max(LAYOUTS, key=lambda label: multi.rps[label])
    ratios = [
        ours / rest
        for ours, rest in zip(multi.round_rps[best], multi.round_rps[REST_WORKERS], strict=True)
    ]
    return [
        Figure(
            f"multicore.{REST_WORKERS}",
            f"REST (seed design), uvicorn with {REST_WORKER_COUNT} workers",
            multi.rps[REST_WORKERS],
            "calls/s",
            f"same rounds as the layouts above; {multi.in_flight} in flight over "
            f"{multi.in_flight} HTTP/1.1 connections; server "
            f"{multi.cores_used[REST_WORKERS]:.2f} cores busy (split "
            + "/".join(f"{share:.0%}" for share in multi.cpu_share[REST_WORKERS])
            + f"), rest of machine {multi.other_cpu_cores[REST_WORKERS]:.2f}",
        ),
        Figure(
            "multicore.best_vs_rest",
            f"Whole machine: the best serving configuration ÷ REST with {REST_WORKER_COUNT} "
            "workers",
            statistics.median(ratios),
            "x",
            f"best: {LAYOUTS[best]}, {multi.rps[best]:,.0f} calls/s; median of rounds: "
            + ", ".join(f"{ratio:.2f}" for ratio in ratios),
            Target(">=", 0.6),
        ),
    ]


def _store_figures(store: StoreResult) -> list[Figure]:
    """The history's cost: Execute(seed) with each store, their ratio, and StartExecution."""

    def detail(point: LoadPoint) -> str:
        return (
            f"h2load, {store.in_flight} in flight; p50 {point.p50_ms:.2f} ms, "
            f"p99 {point.p99_ms:.2f} ms; server CPU {point.server_cpu_us_per_call:.0f} µs "
            "per call; rounds " + ", ".join(f"{rps:,.0f}" for rps in point.round_rps)
        )

    ratios = store.round_ratios
    return [
        Figure(
            "store.memory",
            "Execute(seed), --store memory",
            store.memory.rps,
            "calls/s",
            detail(store.memory),
        ),
        Figure(
            "store.sqlite",
            "Execute(seed), SQLite store",
            store.sqlite.rps,
            "calls/s",
            detail(store.sqlite),
        ),
        Figure(
            "store.ratio",
            "SQLite store ÷ --store memory, Execute(seed) throughput",
            store.ratio,
            "x",
            "median of rounds (alternating servers): "
            + ", ".join(f"{ratio:.2f}" for ratio in ratios)
            + f" (spread {min(ratios):.2f}-{max(ratios):.2f}); "
            f"{store.memory.discarded_rounds} noisy rounds redone",
            Target(">=", 0.8),
        ),
        Figure(
            "store.cpu_ratio",
            "--store memory ÷ SQLite store, server CPU per Execute(seed)",
            store.memory.server_cpu_us_per_call / store.sqlite.server_cpu_us_per_call,
            "x",
            f"{store.memory.server_cpu_us_per_call:.0f} µs ÷ "
            f"{store.sqlite.server_cpu_us_per_call:.0f} µs, all threads: the throughput "
            "ratio a machine busy with other work tends to, less noisy than it",
        ),
        Figure(
            "store.start",
            "StartExecution(seed), SQLite store, executions finishing in the background",
            store.start.rps,
            "calls/s",
            detail(store.start)
            + f"; the last execution finished {store.drain_seconds:.2f} s after the last reply",
        ),
    ]


def _median_ratio(numerators: tuple[float, ...], denominators: tuple[float, ...]) -> float:
    return statistics.median(n / d for n, d in zip(numerators, denominators, strict=True))


def _profile_json(profile: ProfileSummary | None) -> dict[str, Any] | None:
    return None if profile is None else dataclasses.asdict(profile)


def _point(points: tuple[LoadPoint, ...], generator: str, method: str, in_flight: int) -> LoadPoint:
    candidates = [p for p in points if p.generator == generator and p.method == method]
    return min(candidates, key=lambda p: abs(p.in_flight - in_flight))


def _transport_figures(points: tuple[LoadPoint, ...]) -> list[Figure]:
    figures = []
    for generator in ("h2load", "python"):
        mine = [point for point in points if point.generator == generator]
        for in_flight in sorted({point.in_flight for point in mine}):
            by_method = {point.method: point for point in mine if point.in_flight == in_flight}
            figures += [_load_figure(point) for point in by_method.values()]
            check, execute = by_method[CHECK], by_method[EXECUTE]
            judged = generator == "h2load" and in_flight in (8, 64)
            redone = f"; {check.discarded_rounds} noisy rounds redone" if judged else ""
            figures.append(
                _ratio_figure(
                    f"transport.{generator}.ratio.{in_flight}",
                    f"Execute(seed) ÷ Health/Check, {in_flight} in flight ({generator})",
                    execute,
                    check,
                    redone,
                    Target(">=", 0.70) if judged else None,
                )
            )
            if REST in by_method:
                figures.append(
                    _ratio_figure(
                        f"transport.{generator}.rest_ratio.{in_flight}",
                        f"Execute(seed) ÷ REST (seed design), {in_flight} in flight ({generator})",
                        execute,
                        by_method[REST],
                        "; one process each; REST over HTTP/1.1, one connection per call in flight",
                        Target(">=", 0.8) if judged else None,
                    )
                )
    return figures


_FIGURE_KEYS = {CHECK: "check", EXECUTE: "execute", REST: "rest"}


def _load_figure(point: LoadPoint) -> Figure:
    generator = point.generator
    return Figure(
        f"transport.{generator}.{_FIGURE_KEYS[point.method]}.{point.in_flight}",
        f"{point.method}, {point.in_flight} in flight ({generator})",
        point.rps,
        "calls/s",
        f"p50 {point.p50_ms:.2f} ms, p99 {point.p99_ms:.2f} ms; CPU per call: "
        f"server {point.server_cpu_us_per_call:.0f} µs, "
        f"{generator} {point.client_cpu_us_per_call:.0f} µs"
        + (
            f"; rest of machine {point.other_cpu_cores:.2f} cores busy"
            if generator == "h2load"
            else ""
        ),
    )


def _ratio_figure(
    key: str, label: str, top: LoadPoint, bottom: LoadPoint, note: str, target: Target | None
) -> Figure:
    """The median of the rounds' ratios of `top`'s calls/s to `bottom`'s, each round's listed."""
    ratios = [t / b for t, b in zip(top.round_rps, bottom.round_rps, strict=True)]
    return Figure(
        key,
        label,
        statistics.median(ratios),
        "x",
        "median of rounds: " + ", ".join(f"{ratio:.2f}" for ratio in ratios) + note,
        target,
    )


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _verdict(figure: Figure) -> str:
    if figure.passed is None:
        return ""
    return "pass" if figure.passed else "MISS"


def render_table(results: Results) -> str:
    """The table printed at the end of a run."""
    rows = [("Figure", "Value", "Target", "Result", "Detail")]
    for figure in results.figures():
        rows.append(
            (
                figure.label,
                f"{_number(figure.value)} {figure.unit}",
                f"{figure.target} {figure.unit}" if figure.target else "",
                _verdict(figure),
                figure.detail,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = [f"Flow Manager benchmark ({results.mode} run): {_machine_line(results.machine)}"]
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[4]]).rstrip())
        if index == 0:
            lines.append("  ".join("-" * width for width in [*widths, 6]))
    for note in (results.rest_note, results.profile_note):
        if note:
            lines.append(note)
    return "\n".join(lines)


def _machine_line(machine: dict[str, Any]) -> str:
    return (
        f"{machine['cores']} cores ({machine['cpu']}), Python {machine['python']}, "
        f"grpcio {machine['grpcio']}, {machine['h2load']}; git {machine['git']}"
    )


def render_markdown(results: Results) -> str:
    """The Markdown block that `update_docs` puts in docs/performance.md."""
    machine = results.machine
    lines = [
        "## Latest results",
        "",
        f"Full run of {machine['date']}, {results.elapsed_seconds / 60:.1f} minutes, "
        f"every figure from that one run.",
        "",
        "| Machine | |",
        "| --- | --- |",
        *(f"| {name} | {value} |" for name, value in machine.items()),
        "",
        "| Figure | Value | Target | Result | How |",
        "| --- | ---: | --- | --- | --- |",
    ]
    for figure in results.figures():
        target = f"{figure.target} {figure.unit}" if figure.target else ""
        verdict = {True: "pass", False: "**miss**", None: ""}[figure.passed]
        lines.append(
            f"| {figure.label} | {_number(figure.value)} {figure.unit} | {target} | "
            f"{verdict} | {figure.detail} |"
        )
    lines += ["", *_markdown_profiles(results)]
    return "\n".join(lines).rstrip() + "\n"


def _markdown_profiles(results: Results) -> list[str]:
    if results.execute_profile is None or results.engine_profile is None:
        return [f"Profiles: {results.profile_note}"]
    execute, engine = results.execute_profile, results.engine_profile
    per_call = results.execute_cpu_us()
    per_step = results.engine.us_per_step
    inside = engine.root_share
    return [
        "### Profile of Execute(seed) in the server",
        "",
        f"py-spy `--gil`, {execute.samples:,} samples of the server under h2load at 8 in "
        f"flight. {execute.root_share:.0%} of the server's Python time is inside "
        f"`{execute.root}` (request conversion, validation, engine, reply conversion); the "
        f"other {1 - execute.root_share:.0%} is grpc's transport (its Cython callbacks run "
        "under `Handle._run`) and the asyncio loop. Microseconds are the share times the "
        f"measured server CPU per Execute(seed) call at 8 in flight ({per_call:.0f} µs).",
        "",
        *_profile_table(f"Direct callee of `{execute.root}`", execute.callees, 1, per_call),
        *_profile_table(
            f"On the stack below `{execute.root}` (inclusive)",
            execute.inclusive_inside_root,
            1,
            per_call,
        ),
        "### Profile of an engine step",
        "",
        f"pyinstrument, {engine.samples / 1e6:.1f} s of `python -m bench.engine_micro` under "
        f"the profiler; shares are of the time inside `{engine.root}` ({inside:.0%} of the "
        f"run; the rest is start-up and building the flow), times the {per_step:.1f} µs a "
        "step takes without the profiler.",
        "",
        *_profile_table(
            f"On the stack below `{engine.root}` (inclusive)",
            engine.inclusive_inside_root,
            inside,
            per_step,
            per="step",
        ),
        *_profile_table(
            "Own time, inside the engine",
            engine.self_time_inside_root,
            inside,
            per_step,
            per="step",
        ),
    ]


def _profile_table(
    title: str,
    rows: tuple[tuple[str, float], ...],
    base: float,
    cost_us: float,
    per: str = "call",
) -> list[str]:
    return [
        f"| {title} | Share | ≈ µs per {per} |",
        "| --- | ---: | ---: |",
        *(
            f"| `{name}` | {share / base:.1%} | {share / base * cost_us:.1f} |"
            for name, share in rows
        ),
        "",
    ]


def update_docs(path: Path, results: Results) -> None:
    """Replaces the generated block of `path` (between the markers) with this run's results."""
    text = path.read_text()
    pattern = re.compile(re.escape(DOCS_BEGIN) + r".*?" + re.escape(DOCS_END), re.DOTALL)
    if not pattern.search(text):
        raise RuntimeError(f"{path} has no {DOCS_BEGIN} ... {DOCS_END} block")
    block = f"{DOCS_BEGIN}\n\n{render_markdown(results)}\n{DOCS_END}"
    path.write_text(pattern.sub(lambda _: block, text))


def write_json(path: Path, results: Results) -> None:
    """Writes `results.to_json()` to `path`, creating its directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results.to_json(), indent=2, ensure_ascii=False) + "\n")


def machine_info(h2load: str) -> dict[str, Any]:
    """What the figures were measured on, and which code."""
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    version = subprocess.run(
        [h2load, "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "cpu": cpu,
        "memory": f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "grpcio": metadata.version("grpcio"),
        "protobuf": metadata.version("protobuf"),
        "h2load": version or "h2load",
        "load_average_at_start": " ".join(f"{load:.2f}" for load in os.getloadavg()),
        "git": _git_state(),
    }


def _git_state() -> str:
    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()

    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    dirty = git("status", "--porcelain", "--", "flowservice", "protos", "generated")
    return f"{commit} (flowservice/ with uncommitted changes)" if dirty else commit

"""The engine alone, in-process, no gRPC: microseconds per task step of a long chain.

The chain is the seed's shape (`bench.flows.linear_flow`): every task is
routed to the next by a condition, so each step runs a task, records its
result and evaluates a condition. The task is a no-op (an async function
that returns None), so what is measured is the engine's own work per step,
its validation of the flow included, spread over the steps.

Run as `python -m bench.engine_micro --steps N --repeats R`, it prints its
result as JSON; the harness runs it in a subprocess of its own, so nothing
else shares the interpreter. With `--profile PATH` the runs are profiled with
pyinstrument, and PATH gets the samples as collapsed stacks (`frame;frame
microseconds` per line, the format of py-spy's raw output).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.flows import linear_flow, to_execute_request
from flowservice import collector
from flowservice.api.convert import flow_from_proto
from flowservice.engine import Engine
from flowservice.limits import Limits
from flowservice.tasks import TaskContext, TaskRegistry

__all__ = ["EngineMicroResult", "main", "measure"]

NOOP_TYPE = "noop"
PROFILE_INTERVAL = 0.0002
"""Seconds between pyinstrument's samples."""


@dataclass(frozen=True, slots=True)
class EngineMicroResult:
    """Wall times of `Engine.execute` on a chain of `steps` no-op tasks."""

    steps: int
    """Tasks in the chain, all of which ran."""
    seconds: tuple[float, ...]
    """One per repeat, after one warm-up run."""

    @property
    def us_per_step(self) -> float:
        """Median microseconds per task step."""
        return statistics.median(self.seconds) / self.steps * 1e6

    @property
    def us_per_step_best(self) -> float:
        """Fastest repeat's microseconds per task step."""
        return min(self.seconds) / self.steps * 1e6


async def _noop(ctx: TaskContext) -> None:
    """A task that does nothing and succeeds."""


async def measure(steps: int, repeats: int) -> EngineMicroResult:
    """Runs the chain once to warm up, then `repeats` times, timing `Engine.execute`."""
    registry = TaskRegistry()
    registry.register(NOOP_TYPE, _noop)
    defaults = Limits()
    limits = dataclasses.replace(
        defaults,
        max_tasks=max(steps, defaults.max_tasks),
        max_conditions=max(steps, defaults.max_conditions),
        default_max_steps=max(steps, defaults.default_max_steps),
        max_steps_ceiling=max(steps, defaults.max_steps_ceiling),
    )
    engine = Engine(registry, limits=limits)
    # As `serve` does once started (flowservice.collector): what starting made is
    # out of the collector's sight, so its full collections walk only what runs
    # make (the flow, its plan, its results), as in the server; without it, each
    # also walked the 44k objects of the imports (89.1k -> 87.7k instructions per
    # step, by valgrind). Its young threshold is the server's too.
    thresholds = gc.get_threshold()
    collector.settle()
    flow = flow_from_proto(to_execute_request(linear_flow(steps, task_type=NOOP_TYPE)).flow)
    try:
        seconds = []
        for run in range(repeats + 1):
            started = time.perf_counter()
            summary = await engine.execute(flow)
            elapsed = time.perf_counter() - started
            if summary.status.name != "COMPLETED" or len(summary.executed_tasks) != steps:
                raise RuntimeError(
                    f"the chain did not complete: {summary.status} after "
                    f"{len(summary.executed_tasks)} of {steps} steps: {summary.error}"
                )
            if run:
                seconds.append(elapsed)
    finally:
        engine.close()
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    return EngineMicroResult(steps, tuple(seconds))


def collapsed_stacks(root: Any) -> str:
    """pyinstrument's frame tree as collapsed stacks, one line per stack with its own time.

    Frames are named `Class.function (file)` like py-spy's; the time of
    pyinstrument's synthetic frames (`[self]`, `[await]`) stays with their parent.
    """
    lines = []

    def walk(frame: Any, path: list[str]) -> None:
        name = f"{frame.class_name}.{frame.function}" if frame.class_name else frame.function
        path = [*path, f"{name} ({frame.file_path_short})"]
        children = [child for child in frame.children if not child.is_synthetic]
        own = frame.time - sum(child.time for child in children)
        if round(own * 1e6) > 0:
            lines.append(f"{';'.join(path)} {round(own * 1e6)}")
        for child in children:
            walk(child, path)

    walk(root, [])
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    """Prints `{"steps": N, "seconds": [...]}` for `--steps` and `--repeats`."""
    parser = argparse.ArgumentParser(prog="python -m bench.engine_micro")
    parser.add_argument("--steps", type=int, default=10_000, help="tasks in the chain")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs after one warm-up")
    parser.add_argument(
        "--profile", type=Path, help="profile with pyinstrument; write collapsed stacks here"
    )
    args = parser.parse_args(argv)
    if args.profile is None:
        result = asyncio.run(measure(args.steps, args.repeats))
    else:
        from pyinstrument import Profiler  # only the profile needs it

        profiler = Profiler(interval=PROFILE_INTERVAL)
        profiler.start()
        result = asyncio.run(measure(args.steps, args.repeats))
        session = profiler.stop()
        args.profile.write_text(collapsed_stacks(session.root_frame()))
    print(json.dumps({"steps": result.steps, "seconds": list(result.seconds)}))


if __name__ == "__main__":
    main()

"""How much the benchmark does: the full profile (`make bench`) and the smoke profile.

The smoke profile exercises every measurement with a few hundred calls and
tiny flows so that `make test` proves the harness still produces every
figure; its numbers mean nothing. The full profile takes a few minutes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["FULL", "SMOKE", "BenchConfig"]


@dataclass(frozen=True, slots=True)
class BenchConfig:
    """Sizes, counts and durations of one benchmark run."""

    mode: str
    """"full" or "smoke"."""
    in_flight: tuple[int, ...]
    """Calls in flight for the transport comparison."""
    rounds: int
    """Alternating Health/Check and Execute runs per h2load measurement."""
    redo_noisy_rounds: bool
    """Measure a round again when the rest of the machine was busy during it."""
    python_rounds: int
    """Alternating rounds of the Python load generator."""
    h2load_seconds: float
    """Aim for each h2load run; its call count is sized from a warm-up run."""
    h2load_min_requests: int
    """Fewest calls in one h2load run."""
    h2load_max_requests: int
    """Most calls in one h2load run."""
    warmup_requests: int
    """Calls of each warm-up (and calibration) run."""
    python_requests: int
    """Calls per point of the Python load generator."""
    engine_steps: int
    """Length of the chain of no-op tasks of the engine microbenchmark."""
    engine_repeats: int
    """Timed runs of that chain."""
    flow_sizes: tuple[int, int, int]
    """Task counts of the linear flows whose server-side time is compared."""
    flow_repeats: tuple[int, int, int]
    """Executions of each of those flows (the median is reported)."""
    stream_tasks: int
    """Tasks of the flow streamed by `ExecuteStream`."""
    stream_repeats: int
    """Streams timed (the median is reported)."""
    memory_executions: int
    """Executions asleep in a task at once for the memory figure."""
    memory_sleep_ms: int
    """How long each of them sleeps: enough for all to arrive first."""
    multicore_in_flight: int
    """Calls in flight for the --workers 1 / --workers 2 comparison."""
    profile_seconds: float
    """Sampling time of each py-spy profile."""

    @property
    def max_flow_tasks(self) -> int:
        """The largest flow sent: the server's task and step limits are raised to it."""
        return max(*self.flow_sizes, self.stream_tasks)


FULL = BenchConfig(
    mode="full",
    in_flight=(1, 8, 64),
    rounds=6,
    redo_noisy_rounds=True,
    python_rounds=3,
    h2load_seconds=1.5,
    h2load_min_requests=2_000,
    h2load_max_requests=100_000,
    warmup_requests=1_000,
    python_requests=2_000,
    engine_steps=10_000,
    engine_repeats=5,
    flow_sizes=(100, 1_000, 10_000),
    flow_repeats=(30, 20, 7),
    stream_tasks=10_000,
    stream_repeats=5,
    memory_executions=5_000,
    memory_sleep_ms=25_000,
    multicore_in_flight=64,
    profile_seconds=5.0,
)

SMOKE = BenchConfig(
    mode="smoke",
    in_flight=(1, 8, 64),
    rounds=1,
    redo_noisy_rounds=False,
    python_rounds=1,
    h2load_seconds=0.2,
    h2load_min_requests=200,
    h2load_max_requests=200,
    warmup_requests=64,
    python_requests=100,
    engine_steps=200,
    engine_repeats=2,
    flow_sizes=(10, 30, 100),
    flow_repeats=(3, 3, 2),
    stream_tasks=100,
    stream_repeats=1,
    memory_executions=200,
    memory_sleep_ms=3_000,
    multicore_in_flight=64,
    profile_seconds=0.5,
)

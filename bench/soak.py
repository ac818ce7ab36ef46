"""`python -m bench.soak`: a bounded soak of a real server, with mixed RPCs and client cancels.

`make soak` (SOAK_MINUTES, default 3) starts `python -m flowservice` with its
defaults (plus metrics on a free port) and keeps 32 calls in flight for the
whole time, each drawn from a mix of every kind of call the service answers:
Execute of the seed flow, ExecuteStream, Validate, Health/Check, what-if
stubs, a flow that fails, a flow routed by conditions, retries, an invalid
flow and a flow that outlives its deadline. One call in ten is cancelled by
the client after a random delay of up to 20 ms (mid-flight, or after it
finished when it was quicker).

It reports what the server holds at the start (idle), during the load and at
the end (idle again): resident memory, peak resident memory (VmHWM), open
file descriptors and threads from /proc/PID/, and asyncio tasks from the
server's `flowmanager_asyncio_tasks` gauge on /metrics. Then calls/s and the
statuses by kind of call; a status a kind should never get is counted as
unexpected. A server that leaks shows it as end figures above the start's;
one that crashes or wedges ends the soak with an error.

python -m bench.soak --minutes 3            # what `make soak` runs
python -m bench.soak --seconds 5 --json out.json   # the smoke test's run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from bench.flows import REPO_ROOT
from bench.workers import serving
from flowmanager.v1 import flow_service_pb2

__all__ = ["CallKind", "Sample", "SoakResult", "call_kinds", "main", "soak"]

EXAMPLES = REPO_ROOT / "examples"
CONCURRENCY = 32
CANCEL_FRACTION = 0.10
CANCEL_WINDOW = 0.020
"""A cancelled call is cancelled after a random delay of up to this many seconds."""
CALL_TIMEOUT = 30.0
"""Deadline of every call but the one meant to run out of time: generous, not measured."""
IDLE_TIMEOUT = 15.0
"""Seconds the server gets after the load to settle before the end sample."""
_METRICS = re.compile(r"metrics on (http://[^\s]+/metrics)")
_TASKS = re.compile(r"^flowmanager_asyncio_tasks (\S+)$", re.MULTILINE)

_OK = frozenset({"OK"})


@dataclass(frozen=True, slots=True)
class CallKind:
    """One kind of call in the mix."""

    name: str
    method: str
    """Full method path."""
    body: bytes
    """The serialized request."""
    weight: int
    """Relative frequency in the mix."""
    expected: frozenset[str] = _OK
    """Status codes (names) this kind may end with, besides CANCELLED when cancelled."""
    stream: bool = False
    timeout: float = CALL_TIMEOUT


def call_kinds() -> tuple[CallKind, ...]:
    """The mix, from the requests in examples/ (the README's)."""

    def request(name: str, kind: type[Any] = flow_service_pb2.ExecuteRequest) -> bytes:
        body = json.loads((EXAMPLES / name).read_text())
        return bytes(json_format.ParseDict(body, kind()).SerializeToString())

    service = "/flowmanager.v1.FlowService/"
    execute, stream = service + "Execute", service + "ExecuteStream"
    seed = request("seed-flow.json")
    invalid = json.loads((EXAMPLES / "seed-flow.json").read_text())
    invalid["flow"]["tasks"][0]["type"] = "no_such_type"
    return (
        CallKind("health", "/grpc.health.v1.Health/Check", b"", 10),
        CallKind("execute_seed", execute, seed, 25),
        CallKind("stream_seed", stream, seed, 15, stream=True),
        CallKind("validate", service + "Validate", request("validate-flow.json"), 10),
        CallKind("what_if_stubs", execute, request("what-if.json"), 10),
        CallKind("failing_flow", execute, request("seed-failure.json"), 10),
        CallKind("conditions", execute, request("branching-flow.json"), 10),
        CallKind("retries_stream", stream, request("retry-flow.json"), 3, stream=True),
        CallKind(
            "invalid_flow",
            execute,
            json_format.ParseDict(invalid, flow_service_pb2.ExecuteRequest()).SerializeToString(),
            5,
            expected=frozenset({"INVALID_ARGUMENT"}),
        ),
        CallKind(
            "deadline",
            execute,
            request("slow-flow.json"),
            2,
            expected=frozenset({"DEADLINE_EXCEEDED"}),
            timeout=0.2,
        ),
    )


@dataclass(frozen=True, slots=True)
class Sample:
    """What the server process holds at one moment."""

    seconds: float
    """Since the load started (negative: before it)."""
    rss_mib: float
    peak_rss_mib: float
    """VmHWM: the most resident memory the process has had so far."""
    fds: int
    threads: int
    asyncio_tasks: int


class ServerProbe:
    """Reads a server's figures from /proc/PID and its /metrics."""

    def __init__(self, pid: int, metrics_url: str) -> None:
        self._pid = pid
        self._metrics_url = metrics_url

    def sample(self, seconds: float) -> Sample:
        """The figures now (blocking: a /proc read and one HTTP GET)."""
        status = dict(
            line.split(":", 1)
            for line in Path(f"/proc/{self._pid}/status").read_text().splitlines()
            if ":" in line
        )
        with urllib.request.urlopen(self._metrics_url, timeout=10) as reply:
            tasks = _TASKS.search(reply.read().decode())
        if tasks is None:
            raise RuntimeError("the server's /metrics has no flowmanager_asyncio_tasks")
        return Sample(
            seconds=round(seconds, 1),
            rss_mib=_mib(status["VmRSS"]),
            peak_rss_mib=_mib(status["VmHWM"]),
            fds=len(os.listdir(f"/proc/{self._pid}/fd")),
            threads=int(status["Threads"]),
            asyncio_tasks=int(float(tasks.group(1))),
        )


def _mib(kilobytes: str) -> float:
    return round(int(kilobytes.split()[0]) / 1024, 1)


@dataclass
class Tally:
    """Every call made, by kind and final status."""

    statuses: dict[str, Counter[str]] = field(default_factory=dict)
    calls: int = 0
    cancels_requested: int = 0
    cancelled_mid_flight: int = 0
    unexpected: Counter[str] = field(default_factory=Counter)

    def record(self, kind: CallKind, code: grpc.StatusCode, cancel_requested: bool) -> None:
        """Counts one finished call; a status the kind should not get counts as unexpected."""
        self.calls += 1
        self.statuses.setdefault(kind.name, Counter())[code.name] += 1
        if cancel_requested:
            self.cancels_requested += 1
            if code is grpc.StatusCode.CANCELLED:
                self.cancelled_mid_flight += 1
                return
        if code.name not in kind.expected:
            self.unexpected[f"{kind.name} {code.name}"] += 1


async def one_call(
    channel: grpc.aio.Channel, kind: CallKind, cancel_after: float | None
) -> grpc.StatusCode:
    """Makes one call of `kind`, cancelling it after `cancel_after` seconds; its status."""
    call: Any
    if kind.stream:
        call = channel.unary_stream(kind.method)(kind.body, timeout=kind.timeout)
    else:
        call = channel.unary_unary(kind.method)(kind.body, timeout=kind.timeout)

    async def consume() -> None:
        if kind.stream:
            async for _ in call:
                pass
        else:
            await call

    consumer = asyncio.ensure_future(consume())
    if cancel_after is not None:
        await asyncio.wait([consumer], timeout=cancel_after)
        call.cancel()  # does nothing when the call has finished
    await asyncio.wait([consumer])
    if not consumer.cancelled():
        consumer.exception()  # an RPC error is read from the call's code below
    code: grpc.StatusCode = await call.code()
    return code


async def drive(
    address: str,
    kinds: Sequence[CallKind],
    *,
    seconds: float,
    concurrency: int,
    cancel_fraction: float,
    rng: random.Random,
) -> Tally:
    """Keeps `concurrency` calls in flight for `seconds`, drawn from `kinds` by weight."""
    tally = Tally()
    weights = [kind.weight for kind in kinds]
    end = time.monotonic() + seconds

    async def caller(channel: grpc.aio.Channel, opening: CallKind) -> None:
        # Callers open with each kind in turn, so with at least as many callers
        # as kinds every kind is made, however short the run (the smoke test).
        kind = opening
        while time.monotonic() < end:
            cancel = rng.random() < cancel_fraction
            cancel_after = rng.uniform(0, CANCEL_WINDOW) if cancel else None
            tally.record(kind, await one_call(channel, kind, cancel_after), cancel)
            kind = rng.choices(kinds, weights)[0]

    # Two connections, as a pair of client processes behind a balancer would open.
    async with (
        grpc.aio.insecure_channel(address) as first,
        grpc.aio.insecure_channel(address) as second,
    ):
        await asyncio.gather(
            *(caller((first, second)[i % 2], kinds[i % len(kinds)]) for i in range(concurrency))
        )
    return tally


@dataclass(frozen=True, slots=True)
class SoakResult:
    """Everything a soak measured."""

    seconds: float
    concurrency: int
    cancel_fraction: float
    calls: int
    calls_per_s: float
    cancels_requested: int
    cancelled_mid_flight: int
    statuses: dict[str, dict[str, int]]
    unexpected: dict[str, int]
    samples: list[Sample]
    """start (idle), one per interval under load, end (idle after the load)."""


async def soak(
    address: str,
    probe: ServerProbe,
    *,
    seconds: float,
    interval: float,
    concurrency: int = CONCURRENCY,
    cancel_fraction: float = CANCEL_FRACTION,
    seed: int = 0,
) -> SoakResult:
    """Runs the load for `seconds`, sampling the server every `interval` seconds."""
    samples = [await asyncio.to_thread(probe.sample, 0.0)]
    started = time.monotonic()

    async def sample_periodically() -> None:
        while True:
            await asyncio.sleep(interval)
            sample = await asyncio.to_thread(probe.sample, time.monotonic() - started)
            samples.append(sample)
            print(_sample_line("load", sample), flush=True)

    print(_sample_line("start", samples[0]), flush=True)
    sampler = asyncio.create_task(sample_periodically())
    try:
        tally = await drive(
            address,
            call_kinds(),
            seconds=seconds,
            concurrency=concurrency,
            cancel_fraction=cancel_fraction,
            rng=random.Random(seed),
        )
    finally:
        sampler.cancel()
    elapsed = time.monotonic() - started
    samples.append(await _settled(probe, started, baseline=samples[0]))
    return SoakResult(
        seconds=round(elapsed, 1),
        concurrency=concurrency,
        cancel_fraction=cancel_fraction,
        calls=tally.calls,
        calls_per_s=round(tally.calls / elapsed, 1),
        cancels_requested=tally.cancels_requested,
        cancelled_mid_flight=tally.cancelled_mid_flight,
        statuses={kind: dict(codes) for kind, codes in sorted(tally.statuses.items())},
        unexpected=dict(tally.unexpected),
        samples=samples,
    )


async def _settled(probe: ServerProbe, started: float, baseline: Sample) -> Sample:
    """The end sample, once the server's asyncio tasks are back to the idle count.

    Calls cancelled by the client end on the server a little later; the wait
    is bounded, and a server that never settles is reported as it is then.
    """
    deadline = time.monotonic() + IDLE_TIMEOUT
    while True:
        await asyncio.sleep(1.0)
        sample = await asyncio.to_thread(probe.sample, time.monotonic() - started)
        if sample.asyncio_tasks <= baseline.asyncio_tasks or time.monotonic() > deadline:
            return sample


def _sample_line(label: str, sample: Sample) -> str:
    return (
        f"{label:>5} {sample.seconds:7.1f} s  RSS {sample.rss_mib:7.1f} MiB  "
        f"peak {sample.peak_rss_mib:7.1f} MiB  fds {sample.fds:4d}  "
        f"threads {sample.threads:3d}  asyncio tasks {sample.asyncio_tasks:4d}"
    )


def render(result: SoakResult) -> str:
    """The report `make soak` prints.

    Besides start and end (idle), the first and last samples under load: the
    start is a fresh process, so growth from start to the first sample is
    warming up (allocator arenas, caches); a leak grows from first to last.
    """
    samples = result.samples
    columns = (samples[0], samples[1 if len(samples) > 2 else 0], samples[-2], samples[-1])
    peak = max(sample.peak_rss_mib for sample in samples)

    def row(label: str, values: Sequence[float | int]) -> str:
        return f"  {label:14s}" + "".join(f"{value:>12}" for value in values)

    lines = [
        f"soak: {result.seconds} s, {result.concurrency} calls in flight, "
        f"{result.cancel_fraction:.0%} cancelled by the client",
        f"calls: {result.calls} ({result.calls_per_s} calls/s); cancels requested "
        f"{result.cancels_requested}: {result.cancelled_mid_flight} mid-flight, "
        f"{result.cancels_requested - result.cancelled_mid_flight} after the call had finished",
        f"unexpected statuses: {sum(result.unexpected.values())} {result.unexpected or ''}",
        "statuses by kind of call:",
        *(
            f"  {kind:15s} " + ", ".join(f"{code} {n}" for code, n in sorted(codes.items()))
            for kind, codes in result.statuses.items()
        ),
        "server"
        + " " * 10
        + "".join(f"{c:>12}" for c in ("start", "first load", "last load", "end")),
        row("at second", [sample.seconds for sample in columns]),
        row("RSS MiB", [sample.rss_mib for sample in columns]),
        row("open fds", [sample.fds for sample in columns]),
        row("threads", [sample.threads for sample in columns]),
        row("asyncio tasks", [sample.asyncio_tasks for sample in columns]),
        f"  peak RSS (VmHWM) {peak:.1f} MiB",
    ]
    return "\n".join(lines)


def _metrics_url(log_path: Path) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = _METRICS.search(log_path.read_text(errors="replace"))
        if found:
            return found.group(1)
        time.sleep(0.05)
    raise RuntimeError("the server did not log its metrics address")


def main(argv: Sequence[str] | None = None) -> int:
    """Parses the flags, runs the soak against a fresh server, prints (and writes) the report."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--minutes", type=float, default=float(os.environ.get("SOAK_MINUTES", 3)))
    length.add_argument("--seconds", type=float, help="the length in seconds (the smoke test)")
    parser.add_argument("--concurrency", type=int, default=CONCURRENCY)
    parser.add_argument("--cancel-fraction", type=float, default=CANCEL_FRACTION)
    parser.add_argument("--interval", type=float, help="seconds between samples")
    parser.add_argument("--seed", type=int, default=0, help="seed of the call mix")
    parser.add_argument("--json", type=Path, help="also write the result here as JSON")
    args = parser.parse_args(argv)
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    interval = args.interval or max(1.0, min(15.0, seconds / 12))
    with tempfile.TemporaryDirectory(prefix="soak-") as log_dir:
        flags = ["--metrics-address", "127.0.0.1:0"]
        with serving(Path(log_dir) / "soak.log", flags, graceful_stop=True) as server:
            probe = ServerProbe(server.process.pid, _metrics_url(server.log_path))
            print(f"server pid {server.process.pid} on {server.address}", flush=True)
            result = asyncio.run(
                soak(
                    server.address,
                    probe,
                    seconds=seconds,
                    interval=interval,
                    concurrency=args.concurrency,
                    cancel_fraction=args.cancel_fraction,
                    seed=args.seed,
                )
            )
            server.check_alive()
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(asdict(result), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

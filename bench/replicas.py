"""`python -m bench.replicas`: replicas on one PostgreSQL, StartExecution throughput and takeover.

Starts a durable PostgreSQL (fsync on) of its own, in a temporary directory,
then measures, for docs/replicas.md:

- `StartExecution(seed)` calls per second with one replica and with two on
  one database (a database per layout), the executions finishing in the
  background. h2load keeps `IN_FLIGHT` calls in flight in all; with two
  replicas, two h2load processes run at once, each with half of the calls
  and half of those in flight. Rounds alternate the layouts; the median of
  each is reported, with the cores that the replicas, PostgreSQL and h2load
  kept busy meanwhile, which is what explains the ratio on a small machine.
- takeover after kill -9: executions run on a replica that is killed; the
  seconds until the surviving replica writes their next event.

python -m bench.replicas                           # the full run (`make bench`), a minute or two
python -m bench.replicas --smoke                   # every figure from a few calls
python -m bench.replicas --docs docs/replicas.md   # also rewrite the results block there
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

from bench.flows import grpc_frame, seed_request
from bench.h2load import H2loadRun, find_h2load, run_h2load
from bench.measure import machine_busy_seconds, shape
from bench.workers import RunningServer, cpu_seconds, process_cpu_seconds, serving
from flowmanager.v1 import execution_service_pb2 as pb
from tests.history.postgres_server import running_postgres
from tests.history.replicas import all_finished, start_on, takeover_seconds
from tests.history.replicas import events as history

__all__ = ["main"]

START_PATH = "/flowmanager.v1.ExecutionService/StartExecution"
IN_FLIGHT = 32
_BEGIN = "<!-- bench.replicas: begin -->"
_END = "<!-- bench.replicas: end -->"


@dataclass(frozen=True, slots=True)
class Profile:
    """How much one run does."""

    rounds: int
    calls: int
    """StartExecution calls per layout and round."""
    takeover_executions: int
    lease_seconds: float
    task_ms: int


FULL = Profile(rounds=3, calls=6_000, takeover_executions=20, lease_seconds=2.0, task_ms=1000)
SMOKE = Profile(rounds=1, calls=400, takeover_executions=2, lease_seconds=1.0, task_ms=300)


@dataclass(frozen=True, slots=True)
class Throughput:
    """One layout's median round."""

    replicas: int
    calls_per_second: float
    replica_cores: float
    """Cores the replicas kept busy, together."""
    postgres_cores: float
    h2load_cores: float
    machine_cores: float
    """Cores the whole machine kept busy."""


def _flags(url: str) -> list[str]:
    return [
        *("--store", url),
        *("--max-concurrent-executions", "10000", "--max-concurrent-rpcs", "10000"),
        *("--drain-delay", "0", "--grace-period", "1"),
    ]


def _postgres_cpu() -> float:
    """CPU seconds used so far by every PostgreSQL process on the machine."""
    total = 0.0
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == "postgres":
                total += process_cpu_seconds(int(comm.parent.name))
        except (OSError, ValueError):
            continue  # it exited meanwhile
    return total


def _round(replicas: Sequence[RunningServer], body: Path, calls: int) -> Throughput:
    """Sends `calls` StartExecution calls spread over `replicas`, all at once."""
    share, in_flight = calls // len(replicas), IN_FLIGHT // len(replicas)
    connections, streams = shape(in_flight)
    before = [sum(cpu_seconds(r)) for r in replicas], _postgres_cpu(), machine_busy_seconds()
    started = time.perf_counter()
    with ThreadPoolExecutor(len(replicas)) as pool:
        runs: list[H2loadRun] = list(
            pool.map(
                lambda r: run_h2load(
                    url=f"http://{r.address}{START_PATH}",
                    body=body,
                    requests=share,
                    connections=connections,
                    streams=streams,
                ),
                replicas,
            )
        )
    wall = time.perf_counter() - started
    replica_cpu = sum(sum(cpu_seconds(r)) for r in replicas) - sum(before[0])
    return Throughput(
        replicas=len(replicas),
        calls_per_second=share * len(replicas) / max(run.seconds for run in runs),
        replica_cores=replica_cpu / wall,
        postgres_cores=(_postgres_cpu() - before[1]) / wall,
        h2load_cores=sum(run.client_cpu_seconds for run in runs) / wall,
        machine_cores=(machine_busy_seconds() - before[2]) / wall,
    )


def throughput(profile: Profile, urls: tuple[str, str], work: Path) -> list[Throughput]:
    """One replica on `urls[0]`, two on `urls[1]`: the median round of each."""
    body = work / "start.bin"
    start = json_format.ParseDict(
        json_format.MessageToDict(seed_request()), pb.StartExecutionRequest()
    )
    body.write_bytes(grpc_frame(start))
    with ExitStack() as stack:
        layouts = [
            [stack.enter_context(serving(work / "single.log", _flags(urls[0])))],
            [stack.enter_context(serving(work / f"pair{n}.log", _flags(urls[1]))) for n in (1, 2)],
        ]
        for layout in layouts:  # warm-up: connections, caches, the first batches
            _round(layout, body, max(IN_FLIGHT * 4, profile.calls // 20))
        rounds: list[list[Throughput]] = [[], []]
        for n in range(profile.rounds):
            order = (0, 1) if n % 2 == 0 else (1, 0)
            for i in order:
                rounds[i].append(_round(layouts[i], body, profile.calls))
    return [sorted(r, key=lambda t: t.calls_per_second)[len(r) // 2] for r in rounds]


def takeover(profile: Profile, url: str, work: Path) -> list[float]:
    """Seconds from a replica's kill -9 to the next event of each of its executions."""
    flags = [*_flags(url), "--lease-seconds", str(profile.lease_seconds)]
    with serving(work / "survivor.log", flags) as survivor:
        with serving(work / "victim.log", flags) as victim:
            ids = asyncio.run(start_on(victim, profile.takeover_executions, profile.task_ms))
            time.sleep(profile.task_ms / 2000)  # they are inside their first task
            victim.process.kill()
            killed_at = time.time()

        async def histories() -> list[float]:
            await all_finished(survivor, ids, within=60 + 10 * profile.lease_seconds)
            return [takeover_seconds(await history(survivor, i), killed_at) for i in ids]

        return sorted(asyncio.run(histories()))


def render(results: list[Throughput], takeovers: list[float], profile: Profile) -> str:
    """The results as a Markdown table and a sentence, for the terminal and the docs."""
    lines = [
        "| replicas | StartExecution(seed) calls/s | ratio to 1 replica | cores busy: replicas"
        " | calls per replica core-second | PostgreSQL | h2load | whole machine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        lines.append(
            f"| {result.replicas} | {result.calls_per_second:,.0f}"
            f" | {result.calls_per_second / results[0].calls_per_second:.2f}"
            f" | {result.replica_cores:.2f}"
            f" | {result.calls_per_second / max(result.replica_cores, 1e-9):,.0f}"
            f" | {result.postgres_cores:.2f}"
            f" | {result.h2load_cores:.2f} | {result.machine_cores:.2f} |"
        )
    lines += [
        "",
        f"Takeover after kill -9 (`--lease-seconds {profile.lease_seconds:g}`, one surviving"
        f" replica, {len(takeovers)} executions): median {statistics.median(takeovers):.2f} s,"
        f" worst {takeovers[-1]:.2f} s.",
    ]
    return "\n".join(lines)


def update_docs(path: Path, block: str) -> None:
    """Replaces the text between the results markers of `path` with `block`."""
    text = path.read_text()
    head, rest = text.split(_BEGIN, 1)
    _, tail = rest.split(_END, 1)
    path.write_text(f"{head}{_BEGIN}\n{block}\n{_END}{tail}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="a few calls: checks the harness")
    parser.add_argument("--docs", type=Path, help="rewrite the results block of this file")
    args = parser.parse_args(argv)
    if args.docs and args.smoke:
        parser.error("--docs takes the results of a full run only")
    profile = SMOKE if args.smoke else FULL
    find_h2load()  # fails at once, with advice, when h2load is missing
    with (
        tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp,
        running_postgres(durable=True) as postgres,
    ):
        work = Path(tmp)
        print("StartExecution with 1 and 2 replicas on PostgreSQL", file=sys.stderr)
        results = throughput(profile, (postgres.new_database(), postgres.new_database()), work)
        print("takeover after kill -9", file=sys.stderr)
        takeovers = takeover(profile, postgres.new_database(), work)
    block = render(results, takeovers, profile)
    print(block)
    if args.docs:
        update_docs(args.docs, block)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python -m bench`: run the benchmark, print the table, write JSON (and the docs).

python -m bench                 # the full run (`make bench`), a few minutes
python -m bench --smoke         # every figure from a few hundred calls, seconds
python -m bench --docs docs/performance.md   # also rewrite the results block there
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import sys
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

from bench import measure
from bench.config import FULL, SMOKE, BenchConfig
from bench.flows import REPO_ROOT
from bench.h2load import find_h2load
from bench.history import server_pair, store_cost
from bench.profiling import (
    EXECUTE_ROOT,
    ProfileSummary,
    find_py_spy,
    profile_engine,
    profile_server,
    pyinstrument_installed,
)
from bench.report import Results, machine_info, render_table, update_docs, write_json
from bench.rest_peer import process as rest_peer
from bench.workers import RunningServer, serving

RESULTS_DIR = REPO_ROOT / "bench" / "results"


def server_flags(config: BenchConfig) -> list[str]:
    """The server's flags for the benchmark: defaults, with limits raised to fit the load."""
    largest = str(max(config.max_flow_tasks, 10_000))
    return [
        "--max-tasks",
        largest,
        "--max-conditions",
        largest,
        "--step-limit",
        largest,
        "--step-limit-ceiling",
        largest,
        "--max-concurrent-executions",
        str(max(2 * config.memory_executions, 1_000)),
        # The memory figure holds every execution in flight on one connection.
        "--max-concurrent-rpcs",
        str(max(2 * config.memory_executions, 2_000)),
        "--max-concurrent-streams",
        str(max(2 * config.memory_executions, 1_000)),
        "--max-request-bytes",
        str(64 * 1024 * 1024),
        # Stop at once when the benchmark is done; no call is in flight by then.
        "--drain-delay",
        "0",
        "--grace-period",
        "1",
    ]


def run(
    config: BenchConfig,
    *,
    work: Path,
    profile: bool,
    quiet_wait: float = 0.0,
    progress: bool = True,
) -> Results:
    """Starts the servers, measures every section and returns the results.

    `work` receives the request bodies and the servers' logs, kept for a look
    after the run (a failed one especially).
    """
    h2load = find_h2load()
    started = time.perf_counter()

    def say(message: str) -> None:
        if progress:
            print(
                f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True
            )

    machine = machine_info(h2load)
    if quiet_wait > 0:
        say(f"waiting up to {quiet_wait:g} s for the machine to be idle")
        busy = measure.wait_for_quiet(quiet_wait)
        machine["busy_cores_before_start"] = f"{busy:.2f}"
    flags = server_flags(config)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    with ExitStack() as stack:
        bodies = measure.Bodies.write(work, config.stream_tasks)

        def start(name: str, workers: int = 1, pin: bool = False) -> RunningServer:
            return stack.enter_context(
                serving(work / f"{name}.log", flags, workers=workers, pin=pin, graceful_stop=True)
            )

        say("engine microbenchmark (in-process, no server running yet)")
        engine = measure.engine_micro(config)

        say("starting servers")
        main = start("main")
        memory_server = start("memory")
        layouts = {
            "workers1": start("workers1"),
            "workers2": start("workers2", workers=2, pin=True),
            "workers1_pinned": start("workers1-pinned", pin=True),
            "workers2_unpinned": start("workers2-unpinned", workers=2),
        }

        rest = rest_workers = None
        if rest_peer.installed():
            rest = stack.enter_context(rest_peer.serving_rest_peer(work / "rest-peer.log"))
            # The whole-machine comparison's REST peer: uvicorn with its own workers.
            rest_workers = stack.enter_context(
                rest_peer.serving_rest_peer(
                    work / "rest-peer-workers.log", workers=measure.REST_WORKER_COUNT
                )
            )
            rest_note = ""
        else:
            rest_note = (
                "REST peer: not measured: FastAPI is not installed "
                "(`make bench` installs bench/requirements.txt)"
            )
        say("transport: Health/Check vs Execute(seed) (vs the REST peer) with h2load")
        transport = measure.transport_h2load(config, main, bodies, rest)
        say("transport: the same with the Python grpc.aio generator")
        transport += measure.transport_python(config, main, bodies)
        say(f"flow sizes {config.flow_sizes}")
        sizes = measure.flow_sizes(config, main)
        say(f"streaming a {config.stream_tasks}-task flow")
        stream = measure.streaming(config, main, bodies)
        say(f"memory with {config.memory_executions} executions asleep")
        memory = measure.memory(config, memory_server)
        say("multi-core: --workers 1 vs --workers 2 (vs the REST peer with 2 workers)")
        multicore = measure.multicore(config, layouts, bodies, rest_workers)
        say("the history's cost: SQLite vs --store memory, then StartExecution")
        stores = server_pair(stack, work, flags)
        store = store_cost(config, *stores, bodies)
        for group in (
            main,
            memory_server,
            *layouts.values(),
            *stores,
            *filter(None, [rest, rest_workers]),
        ):
            group.check_alive()

        execute_profile: ProfileSummary | None = None
        engine_profile: ProfileSummary | None = None
        py_spy = find_py_spy()
        if not profile:
            note = "profiles: not taken (--no-profile)"
        elif py_spy is None or not pyinstrument_installed():
            note = (
                "profiles: not taken: py-spy and pyinstrument are not installed "
                "(`make bench` installs bench/requirements.txt)"
            )
        else:
            say("profiling Execute(seed) in the server (py-spy), then the engine (pyinstrument)")
            execute_profile = _profile_execute(config, py_spy, main, bodies, transport)
            engine_profile = profile_engine(
                [sys.executable, "-m", "bench.engine_micro", *_profile_engine_args(config)]
            )
            note = ""
        say("done")
    machine["load_average_at_end"] = " ".join(f"{load:.2f}" for load in os.getloadavg())

    return Results(
        mode=config.mode,
        machine=machine,
        config=dataclasses.asdict(config),
        transport=transport,
        engine=engine,
        flow_sizes=sizes,
        stream=stream,
        memory=memory,
        multicore=multicore,
        store=store,
        execute_profile=execute_profile,
        engine_profile=engine_profile,
        profile_note=note,
        rest_note=rest_note,
        elapsed_seconds=time.perf_counter() - started,
    )


def _profile_execute(
    config: BenchConfig,
    py_spy: str,
    server: RunningServer,
    bodies: measure.Bodies,
    transport: tuple[measure.LoadPoint, ...],
) -> ProfileSummary:
    (pid,) = server.workers
    in_flight = 8
    rps = next(
        point.rps
        for point in transport
        if point.generator == "h2load"
        and point.method == measure.EXECUTE
        and point.in_flight == in_flight
    )
    connections, streams = measure.shape(in_flight)
    # Sampling slows the server down; ask for enough calls to outlast the profile.
    requests = max(200, round(rps * (config.profile_seconds + 2)))
    summary, _ = profile_server(
        py_spy,
        pid=pid,
        seconds=config.profile_seconds,
        load={
            "url": f"http://{server.address}/flowmanager.v1.FlowService/Execute",
            "body": bodies.seed,
            "requests": requests,
            "connections": connections,
            "streams": streams,
        },
    )
    if summary.root_share == 0:
        raise RuntimeError(f"no sample of the Execute profile is inside {EXECUTE_ROOT}")
    return summary


def _profile_engine_args(config: BenchConfig) -> list[str]:
    # Enough repeats to fill the profile; under pyinstrument a step takes ~50 µs.
    repeats = max(2, round(config.profile_seconds / max(config.engine_steps * 50e-6, 1e-3)))
    return ["--steps", str(config.engine_steps), "--repeats", str(repeats)]


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the benchmark as the flags say; exit status 0 when it produced every figure."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--smoke", action="store_true", help="tiny run that checks every figure is produced"
    )
    parser.add_argument(
        "--json",
        type=Path,
        help="where to write the JSON (default bench/results/latest.json, or smoke.json); "
        "the servers' logs go beside it, in NAME-logs/",
    )
    parser.add_argument(
        "--docs", type=Path, help="rewrite the results block of this Markdown file (full runs)"
    )
    parser.add_argument("--no-profile", action="store_true", help="skip the py-spy profiles")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        help="seconds to wait at most for the machine to be idle first "
        "(default 60 for a full run, 0 for a smoke run)",
    )
    args = parser.parse_args(argv)
    config = SMOKE if args.smoke else FULL
    quiet_wait = args.quiet_wait if args.quiet_wait is not None else 60.0 * (config is FULL)
    json_path = args.json or RESULTS_DIR / ("latest.json" if config is FULL else "smoke.json")
    work = json_path.with_name(json_path.stem + "-logs")
    try:
        results = run(config, work=work, profile=not args.no_profile, quiet_wait=quiet_wait)
    except BaseException:
        print(f"\nThe run failed; the servers' logs are in {work}", file=sys.stderr)
        raise
    write_json(json_path, results)
    print(render_table(results))
    print(f"\nJSON: {json_path}")
    if args.docs:
        if config is not FULL:
            parser.error("--docs takes the results of a full run only")
        update_docs(args.docs, results)
        print(f"Results block of {args.docs} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())

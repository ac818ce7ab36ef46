"""`python -m bench.ab`: two or more builds of the server, measured side by side.

Each variant is a source tree (a checkout, or `git archive REV | tar -x -C DIR`)
and flags; all variants run at once, and h2load measures every (variant,
method) pair in each round, the order reversed every other round, so drift in
a shared machine's speed hits all alike. It prints, per number in flight and
method, each variant's calls/s (median and spread of the rounds), server CPU
per call, and the median and spread of its per-round ratio to the first
variant; with the load average at the start and the end.

    git archive HEAD~1 | (mkdir -p /tmp/base && tar -x -C /tmp/base)
    python -m bench.ab --variant before=/tmp/base --variant after=. --rounds 8
    python -m bench.ab --variant asyncio=. --variant 'uvloop=.=--event-loop uvloop'

A variant is NAME=SOURCE[=FLAGS]: its server runs `python -m flowservice
FLAGS` in SOURCE (with SOURCE and SOURCE/generated on PYTHONPATH), with
`bench.__main__.server_flags` before FLAGS and `--store memory` unless FLAGS
names a store. Every variant uses this interpreter (this .venv).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

from bench import measure
from bench.__main__ import server_flags
from bench.config import FULL
from bench.h2load import probe
from bench.workers import RunningServer

_METHODS = {"check": measure.CHECK, "execute": measure.EXECUTE}


@dataclasses.dataclass(frozen=True, slots=True)
class Variant:
    """One build of the server: a name, its source tree and its flags."""

    name: str
    source: Path
    flags: tuple[str, ...]

    @classmethod
    def parse(cls, spec: str) -> Variant:
        name, _, rest = spec.partition("=")
        source, _, flags = rest.partition("=")
        return cls(name, Path(source or ".").resolve(), tuple(shlex.split(flags)))


@contextmanager
def running(variant: Variant, log_path: Path) -> Iterator[RunningServer]:
    """Serves `variant` on a free port of 127.0.0.1 until the block exits."""
    with socket.socket() as probe_socket:
        probe_socket.bind(("127.0.0.1", 0))
        port = probe_socket.getsockname()[1]
    flags = [*server_flags(FULL), *variant.flags]
    if not any(flag.startswith("--store") for flag in flags):
        flags += ["--store", "memory"]
    env = {**os.environ, "PYTHONPATH": f"{variant.source}:{variant.source / 'generated'}"}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "flowservice", *flags, "--address", f"127.0.0.1:{port}"],
            cwd=variant.source,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        server = RunningServer(process, port, log_path, (process.pid,))
        deadline = time.monotonic() + 30
        while True:
            server.check_alive()
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        process.wait(timeout=15)


def compare(
    variants: Sequence[Variant], methods: Sequence[str], in_flight: Sequence[int], rounds: int
) -> dict[str, object]:
    """Runs the comparison; everything measured, as JSON-ready data."""
    config = dataclasses.replace(FULL, rounds=rounds)
    work = Path("bench/results/ab-logs")
    work.mkdir(parents=True, exist_ok=True)
    load_start = os.getloadavg()
    results: dict[str, object] = {"load_average_at_start": load_start, "points": []}
    with ExitStack() as stack:
        bodies = measure.Bodies.write(work, 10)
        servers = {
            v.name: stack.enter_context(running(v, work / f"{v.name}.log")) for v in variants
        }
        for server in servers.values():
            for method in methods:
                probe(url=_url(server, method), body=bodies.for_method(_METHODS[method]))
        for n in in_flight:
            labels = [(name, method) for method in methods for name in servers]

            def one(label: tuple[str, str], requests: int, n: int = n) -> measure.Measured:
                name, method = label
                return measure.h2load_with_cpu(
                    servers[name],
                    url=_url(servers[name], method),
                    body=bodies.for_method(_METHODS[method]),
                    requests=requests,
                    in_flight=n,
                )

            counts = {label: measure.sized(config, one(label, 1000).run.rps) for label in labels}
            runs, redone = measure.alternating_rounds(
                config,
                [f"{name}|{method}" for name, method in labels],
                lambda key, counts=counts: one(
                    tuple(key.split("|")),  # type: ignore[arg-type]
                    counts[tuple(key.split("|"))],  # type: ignore[index]
                ),
            )
            for method in methods:
                base = [m.run.rps for m in runs[f"{variants[0].name}|{method}"]]
                for name in servers:
                    measured = runs[f"{name}|{method}"]
                    rps = [m.run.rps for m in measured]
                    ratios = [r / b for r, b in zip(rps, base, strict=True)]
                    cpu = sum(sum(m.server_cpu) for m in measured)
                    results["points"].append(  # type: ignore[attr-defined]
                        {
                            "in_flight": n,
                            "method": _METHODS[method],
                            "variant": name,
                            "rps_median": statistics.median(rps),
                            "rps_min": min(rps),
                            "rps_max": max(rps),
                            "server_cpu_us": cpu / sum(m.run.requests for m in measured) * 1e6,
                            "ratio_median": statistics.median(ratios),
                            "ratio_min": min(ratios),
                            "ratio_max": max(ratios),
                            "rounds_redone": redone,
                        }
                    )
    results["load_average_at_end"] = os.getloadavg()
    return results


def _url(server: RunningServer, method: str) -> str:
    return measure.url_of(server, measure._METHOD_PATHS[_METHODS[method]])


def render(results: dict[str, object], first: str) -> str:
    lines = [
        f"load average at start {results['load_average_at_start']}, "
        f"at end {results['load_average_at_end']}",
        f"{'in flight':>9}  {'method':<14} {'variant':<14} {'calls/s (median, range)':<28} "
        f"{'CPU µs/call':>11}  ratio to {first} (median, range)",
    ]
    for p in results["points"]:  # type: ignore[attr-defined]
        lines.append(
            f"{p['in_flight']:>9}  {p['method']:<14} {p['variant']:<14} "
            f"{p['rps_median']:>7,.0f} ({p['rps_min']:,.0f}-{p['rps_max']:,.0f}){'':<8} "
            f"{p['server_cpu_us']:>11.0f}  {p['ratio_median']:.3f} "
            f"({p['ratio_min']:.3f}-{p['ratio_max']:.3f})"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__.split("\n")[0])
    parser.add_argument("--variant", action="append", required=True, help="NAME=SOURCE[=FLAGS]")
    parser.add_argument("--methods", nargs="+", default=["check", "execute"], choices=_METHODS)
    parser.add_argument("--in-flight", nargs="+", type=int, default=[8, 64])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    variants = [Variant.parse(spec) for spec in args.variant]
    results = compare(variants, args.methods, args.in_flight, args.rounds)
    print(render(results, variants[0].name))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

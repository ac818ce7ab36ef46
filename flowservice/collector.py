"""How the server process sets Python's garbage collector once it has started.

What starting made (modules, compiled protos, grpc's server) lives as long
as the process: frozen, out of the collector's sight, a full collection
walks only what calls make. Execute(seed) at 64 in flight: 522 -> 468 µs of
server CPU per call (bench.ab, 6 rounds); no change at 8.

A call makes a few hundred objects that live until it ends, so with
CPython's default threshold (700) a young collection ran every few calls or
steps, walking executions still in flight. At 10,000 it runs a tenth as
often. Long flows gain most: a 10,000-task flow in-process 0.135-0.147 ->
0.130-0.135 s (three runs of six each), the engine's step
(bench.engine_micro) 8.03-8.24 -> 7.65-7.88 µs. Execute(seed) in the server
gained 2.0 % at 8 in flight and 5.5 % at 64 in one interleaved bench.ab run
(6 rounds, quiet) and nothing measurable in another (5 rounds: 1.007 and
0.979). Garbage cycles wait longer to be freed: at most 10,000 allocations.
"""

from __future__ import annotations

import gc

__all__ = ["YOUNG_THRESHOLD", "settle"]

YOUNG_THRESHOLD = 10_000
"""Allocations (less deallocations) between young collections; CPython's default is 700."""


def settle() -> None:
    """Freezes what exists now and raises the young generation's threshold (see the module)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)

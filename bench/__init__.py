"""The Flow Manager benchmark harness: `make bench` (full) and `make bench-smoke`.

It starts the real server (`python -m flowservice`) as subprocesses, drives it
on 127.0.0.1 with h2load (the C load generator from nghttp2) and with a Python
grpc.aio client, runs the engine in-process for its per-step cost, and prints
one table of every figure, all from the same run, so that ratios hold on a
noisy machine. `python -m bench --help` lists the options.

Modules:
    config        the full and smoke profiles: how much load, how big the flows
    flows         request bodies: the seed example, linear chains, sleeping flows
    workers       the server under test: one process, or `--workers N` on one port
    h2load        runs h2load with a pre-serialized gRPC body and checks every reply
    grpc_load     the Python grpc.aio load generator and the other Python clients
    engine_micro  the engine alone, no gRPC: microseconds per task step
    measure       each figure of the table, one function per section
    profiling     profiles of the Execute path (py-spy) and of an engine step (pyinstrument)
    report        figures, targets, the printed table, JSON and docs/performance.md

`cel_compare.py` beside them is a separate script (docs/cel.md), not part of
the harness.
"""

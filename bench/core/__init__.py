"""A compiled core for Execute's hot loop and reply: a benchmark experiment, not the service.

Issue 14 asks whether a compiled core (a Rust extension, as pydantic-core and
orjson are) would bring Execute(seed) to 0.70 of Health/Check's throughput.
`src/lib.rs` (built by `make bench-core` with Debian's PyO3 sources, offline)
runs a compiled flow's tasks and writes the `ExecuteResponse` bytes itself;
`runner` feeds it a plan's tables, `minimal` is the same loop in Python, and
`measure` (`python -m bench.core`) times both against today's servicer.
docs/performance.md ("A compiled core, measured") has the figures.
"""

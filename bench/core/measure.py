"""In-process cost of Execute(seed): today's servicer, a minimal Python loop, the compiled core.

`python -m bench.core` (after `make bench-core` built the extension) first
checks that the core's reply and the minimal loop's are today's reply, field
for field, times and execution id aside, for the seed, a seed whose second
task fails, and one whose second task suspends (sleeps 1 ms); then times
each contender, interleaved round by round (the machine is shared: a round
of one is never compared with a quieter round of another), best of
`--rounds`, `--calls` calls a round.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from google.protobuf.message import Message

from bench.core import _flowcore
from bench.core.minimal import execute_minimal, minimal_plan
from bench.core.runner import compiled, core_plan, execute
from bench.flows import SEED_FLOW_PATH, seed_request, to_execute_request
from flowmanager.v1 import flow_service_pb2
from flowservice.api.convert import flow_from_request
from flowservice.api.recording import RunningExecutions
from flowservice.api.servicer import FlowServicer
from flowservice.engine import Engine
from flowservice.history import open_store, time_ordered_id
from flowservice.tasks import builtin_registry

__all__ = ["main", "servicer", "variants"]

_TIMES = ("start_time", "duration")


class _Context:
    """What `FlowServicer.Execute` reads of a grpc context: no deadline."""

    def time_remaining(self) -> float | None:
        return None


def servicer() -> FlowServicer:
    """Today's servicer, as the server builds it with `--store memory`."""
    engine = Engine(builtin_registry(), new_execution_id=time_ordered_id)
    return FlowServicer(engine, open_store("memory"), RunningExecutions())


def variants() -> dict[str, flow_service_pb2.ExecuteRequest]:
    """The seed, and the seed with its second task failing or suspending for 1 ms, or its
    last task returning an output (a `Struct` in the reply, twice)."""
    flow = json.loads(SEED_FLOW_PATH.read_text())["flow"]
    found = {"seed": seed_request()}
    output = {"n": 1, "text": "x", "list": [1, True, None, "y"], "object": {"k": 2.5}}
    for name, task, params in (
        ("task2 fails", 1, {"fail": True}),
        ("task2 sleeps 1 ms", 1, {"sleep_ms": 1}),
        ("task3 outputs JSON", 2, {"output": output}),
    ):
        changed = json.loads(json.dumps(flow))
        changed["tasks"][task]["params"] = params
        found[name] = to_execute_request(changed)
    return found


def _timeless(message: Message) -> Message:
    """`message` without its times and execution id (they differ from run to run)."""
    for field, value in message.ListFields():
        ours = field.message_type is not None and field.message_type.full_name.startswith(
            "flowmanager."
        )
        if field.name in _TIMES or field.name == "execution_id":
            message.ClearField(field.name)
        elif ours and isinstance(value, Message):
            _timeless(value)
        elif ours:  # a repeated message field of the API's
            for item in value:
                _timeless(item)
    return message


async def verify() -> None:
    """Raises unless the core's and the minimal loop's replies are today's (times aside)."""
    today = servicer()
    registry = builtin_registry()
    for name, request in variants().items():
        plan = compiled(request, registry)
        expected = _timeless(await today.Execute(request, _Context()))  # type: ignore[arg-type]
        replies = {
            "core": await execute(core_plan(plan), {}),
            "minimal": await execute_minimal(minimal_plan(plan), {}, True),
        }
        for who, raw in replies.items():
            assert raw is not None
            got = _timeless(flow_service_pb2.ExecuteResponse.FromString(raw))
            if got.SerializeToString(deterministic=True) != expected.SerializeToString(
                deterministic=True
            ):
                raise AssertionError(
                    f"{who}'s reply for {name!r} differs:\n{got}\nexpected:\n{expected}"
                )
        print(f"verified: {name}: core and minimal replies = today's (times, execution id aside)")


async def _per_call(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - started) / calls


async def contenders() -> dict[str, Callable[[], Awaitable[Any]]]:
    """Each way to run Execute(seed) in-process, as a call to await."""
    today = servicer()
    request = seed_request()
    plan = compiled(request, builtin_registry())
    core, minimal = core_plan(plan), minimal_plan(plan)
    context = _Context()

    async def servicer_execute() -> Any:
        return await today.Execute(request, context)  # type: ignore[arg-type]

    async def servicer_bytes() -> bytes:
        reply = await today.Execute(request, context)  # type: ignore[arg-type]
        return reply.SerializeToString()

    engine = Engine(builtin_registry(), new_execution_id=time_ordered_id)
    flow = flow_from_request(request)
    key = request.flow.SerializeToString()

    async def engine_run() -> Any:
        async for event in engine.run(flow, flow_key=key):
            last = event
        return last

    async def core_loop() -> Any:
        return _flowcore.execute(core, {}, False)

    return {
        "today: FlowServicer.Execute (memory store)": servicer_execute,
        "today: FlowServicer.Execute + SerializeToString": servicer_bytes,
        "today: Engine.run's events alone (no servicer)": engine_run,
        "minimal Python loop, no reply": lambda: execute_minimal(minimal, {}, False),
        "minimal Python loop + reply bytes": lambda: execute_minimal(minimal, {}, True),
        "compiled core, loop only": core_loop,
        "compiled core + reply bytes": lambda: execute(core, {}),
    }


async def measure(rounds: int, calls: int) -> dict[str, float]:
    """Best seconds per call of each contender, over `rounds` interleaved rounds."""
    timed = await contenders()
    for call in timed.values():  # warm up: plans cached, code paths hot
        await _per_call(call, 1000)
    best = dict.fromkeys(timed, float("inf"))
    for _ in range(rounds):
        for name, call in timed.items():
            best[name] = min(best[name], await _per_call(call, calls))
    return best


async def _main(rounds: int, calls: int) -> None:
    await verify()
    best = await measure(rounds, calls)
    print(
        f"\nin-process cost of Execute(seed), best of {rounds} interleaved rounds x {calls} calls:"
    )
    for name, seconds in best.items():
        print(f"  {name:<50} {seconds * 1e6:7.1f} us")


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m bench.core [--rounds R] [--calls N]`."""
    parser = argparse.ArgumentParser(prog="python -m bench.core", description=__doc__)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3000)
    args = parser.parse_args(argv)
    asyncio.run(_main(args.rounds, args.calls))

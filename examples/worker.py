"""A Python worker for the `reports` queue of examples/mesh-flow.json.

    .venv/bin/python examples/worker.py 127.0.0.1:50061                  # until Ctrl-C
    .venv/bin/python examples/worker.py 127.0.0.1:50061 --queue other

It answers each assignment with a one-line verdict on its `valid` param
(set by the task's input mapping), and prints `serving QUEUE` once the
server has it registered. `make bench-mesh` runs it too, to time the worker
round trip. See docs/workers.md for the `flowservice.Worker` it uses.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from flowservice import Worker, WorkItem


async def report(item: WorkItem) -> dict[str, object]:
    """The task's output: a verdict on what the flow handed over (`params.valid`)."""
    verdict = "accepted" if item.params.get("valid") is True else "rejected"
    return {"report": f"{item.flow_id}: {verdict}", "attempt": item.attempt}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("address", help="the Flow Manager, host:port")
    parser.add_argument("--queue", default="reports")
    args = parser.parse_args()
    worker = Worker(args.address, {args.queue: report}, credits=4, name="examples/worker.py")
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, worker.stop)
    serving = asyncio.create_task(worker.run())
    connected = asyncio.create_task(worker.connected.wait())
    await asyncio.wait([serving, connected], return_when=asyncio.FIRST_COMPLETED)
    if connected.done():
        print(f"serving {args.queue}", flush=True)
    connected.cancel()
    await serving


if __name__ == "__main__":
    asyncio.run(main())

"""A worker process for the end-to-end tests: `python -m tests.e2e.worker_process ADDR MODE NAME`.

It serves queue `q` with `flowservice.Worker` and prints one line per thing
the tests wait for: `READY` once registered, `ASSIGNED <id>` when a handler
starts, `CANCELLED <id>` when the server cancels it. Modes: `echo` answers
at once with its name, the params and the attempt; `fail` fails with error
type `CardDeclined`; `hang` never answers (a test kills it or cancels the
execution).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from flowservice import TaskFailure, Worker, WorkItem


def say(line: str) -> None:
    print(line, flush=True)


async def main(address: str, mode: str, name: str) -> None:
    async def handle(item: WorkItem) -> dict[str, Any]:
        say(f"ASSIGNED {item.assignment_id}")
        if mode == "hang":
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                say(f"CANCELLED {item.assignment_id}")
                raise
        if mode == "fail":
            raise TaskFailure("card declined", {"worker": name}, error_type="CardDeclined")
        return {"worker": name, "params": dict(item.params), "attempt": item.attempt}

    worker = Worker(address, {"q": handle}, credits=2, name=name)
    runner = asyncio.create_task(worker.run())
    await worker.connected.wait()
    say("READY")
    await runner


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))

"""`--event-loop`: the server runs on uvloop by default, and on asyncio's own loop when asked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import json_messages
from tests.e2e.test_grpcurl import EXAMPLES, EXECUTE, Grpcurl, ok
from tests.server_process import serving


def uvloop_is_loaded(pid: int) -> bool:
    """Whether process `pid` has uvloop's compiled loop mapped (it imports it only to run it)."""
    return "uvloop/loop." in Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.parametrize(("flags", "uvloop"), [((), True), (("--event-loop", "asyncio"), False)])
def test_the_seed_flow_runs_on_the_chosen_loop(
    tmp_path: Path, grpcurl: Grpcurl, flags: tuple[str, ...], uvloop: bool
) -> None:
    with serving(tmp_path / "server.log", ["--store", "memory", *flags]) as server:
        output = ok(grpcurl("-d", "@", server.address, EXECUTE, stdin=EXAMPLES / "seed-flow.json"))
        [pid] = server.workers

        assert json_messages(output)[0]["status"] == "EXECUTION_STATUS_COMPLETED"
        assert uvloop_is_loaded(pid) is uvloop

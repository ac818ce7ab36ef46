"""End to end: the walk-through of docs/calling-services.md, run as printed.

A real web server serves examples/, a real server subprocess is allowed
to call it and itself, and the README's worker (examples/worker.py) runs
as a process serving the flow's `worker` task; the commands run in bash
with grpcurl, their addresses (and those inside examples/mesh-flow.json)
swapped for the test's.
"""

from __future__ import annotations

import contextlib
import functools
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.e2e.conftest import EXAMPLES, GRPCURL, REPO_ROOT, RunningServer, serving
from tests.e2e.test_grpcurl_logic import _comparable, readme_output

MESH_ADDRESS = "127.0.0.1:50061"
WEB_ADDRESS = "127.0.0.1:8000"
EXECUTE = (
    f"grpcurl -plaintext -d @ {MESH_ADDRESS} flowmanager.v1.FlowService/Execute"
    " < examples/mesh-flow.json"
)
WORKER = f".venv/bin/python examples/worker.py {MESH_ADDRESS}"
REFUSED = (
    "sed 's/127.0.0.1:8000/169.254.169.254/' examples/mesh-flow.json"
    f" | grpcurl -plaintext -d @ {MESH_ADDRESS} flowmanager.v1.FlowService/Validate"
)


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def web() -> Iterator[str]:
    """`python3 -m http.server --directory examples`, in a thread: its host:port."""
    handler = functools.partial(_Quiet, directory=str(EXAMPLES))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def mesh(web: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    flags = ["--allow-target", "127.0.0.1:*", "--allow-target", f"http://{web}/"]
    log = tmp_path_factory.mktemp("mesh") / "server.log"
    with serving(log, flags) as running, _worker(running):
        yield running


@contextlib.contextmanager
def _worker(server: RunningServer) -> Iterator[None]:
    """The README's worker command, run against `server` until the block ends."""
    command = WORKER.replace(".venv/bin/python", sys.executable)
    with subprocess.Popen(
        command.replace(MESH_ADDRESS, server.address).split(),
        cwd=REPO_ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == readme_output(WORKER).strip()
            yield
        finally:
            process.terminate()
            # A worker stops gracefully on SIGTERM: it closes its stream and exits 0.
            assert process.wait(timeout=20) == 0


def _run(command: str, server: RunningServer, web: str, tmp_path: Path) -> str:
    flow = (EXAMPLES / "mesh-flow.json").read_text()
    flow = flow.replace(MESH_ADDRESS, server.address).replace(WEB_ADDRESS, web)
    (tmp_path / "mesh-flow.json").write_text(flow)
    line = command.replace("examples/mesh-flow.json", str(tmp_path / "mesh-flow.json"))
    line = line.replace(MESH_ADDRESS, server.address).replace(WEB_ADDRESS, web)
    line = re.sub(r"(^|\| )grpcurl ", lambda m: f"{m.group(1)}{GRPCURL} -max-time 20 ", line)
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", line],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("command", [EXECUTE, REFUSED], ids=["execute", "refused"])
def test_the_readme_shows_what_the_mesh_flow_prints(
    command: str, mesh: RunningServer, web: str, tmp_path: Path
) -> None:
    printed = [_comparable(line) for line in _run(command, mesh, web, tmp_path).splitlines()]

    position = 0
    for line in readme_output(command).splitlines():
        if line.strip().startswith("...") or not line.strip():
            continue
        assert _comparable(line) in printed[position:], line
        position = printed.index(_comparable(line), position) + 1

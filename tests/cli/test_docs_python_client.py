"""docs/python-client.md: its script runs against a real server and prints what the page shows."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.e2e.conftest import REPO_ROOT, RunningServer

PAGE = REPO_ROOT / "docs" / "python-client.md"
PAGE_ADDRESS = "127.0.0.1:50051"


def test_the_python_example_prints_what_the_page_shows(server: RunningServer) -> None:
    page = PAGE.read_text()
    [script] = re.findall(r"```python\n(.*?)```", page, re.S)
    [shown] = re.findall(r"It prints:\n\n```text\n(.*?)```", page, re.S)
    assert PAGE_ADDRESS in script

    result = subprocess.run(
        [sys.executable, "-c", script.replace(PAGE_ADDRESS, server.address)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout == shown

"""The README's curl example, run as written against a real server, prints what the README shows."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from typing import Any

from tests.http.conftest import CURL_TIMEOUT, HttpServer
from tests.server_process import REPO_ROOT

README_HTTP = "http://127.0.0.1:8080"


def readme_curl() -> tuple[str, str]:
    """The README's curl command and the output it shows."""
    found = re.findall(
        r"```sh\n(curl [^\n`]*)\n```\n\n```json\n(.*?)\n```",
        (REPO_ROOT / "README.md").read_text(),
        re.S,
    )
    assert len(found) == 1, "the README should show one curl command with its output"
    command, shown = found[0]
    return command, shown


def comparable(reply: dict[str, Any]) -> str:
    """`reply` with what changes from run to run (ids, times, durations) blanked out."""
    text = json.dumps(reply, sort_keys=True)
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    text = re.sub(r"\d{4}-\d\d-\d\dT[\d:.]+Z", "<time>", text)
    return re.sub(r'"\d+\.\d+s"', '"<duration>"', text)


def test_the_readme_curl_command_prints_what_the_readme_shows(http_server: HttpServer) -> None:
    command, shown = readme_curl()
    assert README_HTTP in command

    words = shlex.split(command.replace(README_HTTP, http_server.url))
    result = subprocess.run(
        words, cwd=REPO_ROOT, capture_output=True, text=True, timeout=CURL_TIMEOUT, check=False
    )

    assert result.returncode == 0, result.stderr
    assert comparable(json.loads(result.stdout)) == comparable(json.loads(shown))

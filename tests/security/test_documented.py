"""The commands of docs/security.md, run as written: openssl, the server, the policy, grpcurl.

Each block marked `<!-- tested: NAME -->` in the document is read from it,
so the document cannot drift from what works. The server is the real
`python -m flowservice` subprocess, on 127.0.0.1:0 instead of the
documented address; grpcurl is the real binary.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from flowservice.security import StaticTokens
from tests.e2e.conftest import REPO_ROOT, RunningServer, json_messages, serving

DOC = REPO_ROOT / "docs" / "security.md"
GRPCURL = Path(sys.executable).parent / "grpcurl"
SCHEDULER = "spiffe://example.org/ns/prod/sa/scheduler"
TIMEOUT = 30.0

_BLOCK = re.compile(r"<!-- tested: ([\w-]+) -->\n```\w*\n(.*?)```", re.DOTALL)


def documented(name: str) -> str:
    """The body of the block marked `tested: name` in docs/security.md."""
    blocks = dict(_BLOCK.findall(DOC.read_text()))
    assert name in blocks, f"docs/security.md has no block marked tested: {name}"
    return blocks[name]


def command(name: str) -> list[str]:
    """The documented command `name` as argv (continuation lines joined)."""
    return shlex.split(documented(name).replace("\\\n", " "), comments=True)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the try-out certificates and the policy, made as documented."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed (make system-packages installs it)")
    directory = tmp_path_factory.mktemp("documented")
    subprocess.run(
        ["bash", "-e", "-c", documented("dev-certs")],
        cwd=directory,
        check=True,
        capture_output=True,
        timeout=TIMEOUT,
    )
    (directory / "policy.yaml").write_text(documented("policy"))
    return directory


@pytest.fixture(scope="module")
def server(files: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The documented mTLS server, logging JSON at DEBUG so every call is in the log."""
    argv = command("mtls-server")
    assert argv[:3] == ["python", "-m", "flowservice"]
    flags = argv[3:]
    address = flags.index("--address")
    del flags[address : address + 2]  # serving() binds 127.0.0.1:0
    flags = [str(files / flag) if (files / flag).is_file() else flag for flag in flags]
    log = tmp_path_factory.mktemp("log") / "server.log"
    with serving(log, [*flags, "--log-level", "DEBUG", "--log-format", "json"]) as running:
        yield running


def grpcurl(
    server: RunningServer, files: Path, argv: list[str]
) -> subprocess.CompletedProcess[str]:
    """Runs a documented grpcurl command against `server`, with files from `files`."""
    stdin = None
    if "<" in argv:
        stdin_at = argv.index("<")
        stdin, argv = REPO_ROOT / argv[stdin_at + 1], argv[:stdin_at]
    assert argv[0] == "grpcurl"
    args = [server.address if arg == "localhost:50051" else arg for arg in argv[1:]]
    args = [str(files / arg) if (files / arg).is_file() else arg for arg in args]
    with open(stdin or "/dev/null", "rb") as body:
        return subprocess.run(
            [str(GRPCURL), "-connect-timeout", "5", "-max-time", "20", *args],
            stdin=body,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )


def test_the_documented_grpcurl_call_runs_the_flow_over_mtls(
    server: RunningServer, files: Path
) -> None:
    result = grpcurl(server, files, command("mtls-grpcurl"))

    assert result.returncode == 0, result.stderr
    [response] = json_messages(result.stdout)
    assert response["status"] == "EXECUTION_STATUS_COMPLETED"


def test_the_caller_and_its_san_are_in_the_log(server: RunningServer, files: Path) -> None:
    assert grpcurl(server, files, command("mtls-grpcurl")).returncode == 0

    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    executions = [line for line in lines if line.get("execution_id")]
    assert executions, "no log line of the execution"
    assert {(line.get("identity"), line.get("peer")) for line in executions} == {
        (f"mtls:{SCHEDULER}", SCHEDULER)
    }


def test_grpcurl_lists_the_services_through_reflection_the_policy_allows(
    server: RunningServer, files: Path
) -> None:
    flags = ["-cacert", "ca.pem", "-cert", "client.crt", "-key", "client.key"]
    result = grpcurl(server, files, ["grpcurl", *flags, "localhost:50051", "list"])

    assert result.returncode == 0, result.stderr
    assert "flowmanager.v1.FlowService" in result.stdout.split()


def test_grpcurl_without_a_client_certificate_is_refused(
    server: RunningServer, files: Path
) -> None:
    argv = command("mtls-grpcurl")
    for flag in ("-cert", "-key"):
        at = argv.index(flag)
        del argv[at : at + 2]

    result = grpcurl(server, files, argv)

    assert result.returncode != 0
    assert "EXECUTION_STATUS" not in result.stdout


def test_the_documented_static_token_recipe_makes_a_usable_line(tmp_path: Path) -> None:
    script = documented("static-token") + 'printf %s "$TOKEN"\n'
    token = subprocess.run(
        ["bash", "-e", "-c", script],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    ).stdout

    assert len(token) >= 43  # 32 random bytes, base64url
    assert token not in (tmp_path / "tokens.txt").read_text()
    tokens = StaticTokens.from_file(str(tmp_path / "tokens.txt"))
    assert tokens.identify(token) == "token:dashboard"


@pytest.mark.parametrize(
    "flags",
    [
        ["--tls-cert", "missing.crt", "--tls-key", "missing.key"],
        ["--static-tokens", "missing.txt"],
    ],
)
def test_a_file_the_server_cannot_use_stops_it_with_a_message(
    flags: list[str], tmp_path: Path
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flowservice", "--address", "127.0.0.1:0", *flags],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )

    assert result.returncode == 2
    assert "cannot serve" in result.stderr  # the server's own log line, not argparse's usage
    assert "Traceback" not in result.stderr


def wait_for_log(server: RunningServer, pattern: str) -> re.Match[str]:
    """The first match of `pattern` in the server's log, waiting for it a bounded time."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        if match := re.search(pattern, server.log()):
            return match
        time.sleep(0.05)
    pytest.fail(f"no {pattern!r} in the log:\n{server.log()}")


def test_the_documented_metrics_over_https_serve_the_scraper(files: Path, tmp_path: Path) -> None:
    argv = command("metrics-https")
    flags = [str(files / flag) if (files / flag).is_file() else flag for flag in argv[3:]]
    flags[flags.index("--metrics-address") + 1] = "127.0.0.1:0"
    scraper = ssl.create_default_context(cafile=str(files / "ca.pem"))
    scraper.load_cert_chain(str(files / "client.crt"), str(files / "client.key"))

    with serving(tmp_path / "server.log", flags) as running:
        match = wait_for_log(running, r"metrics on https://127\.0\.0\.1:(\d+)/metrics")
        url = f"https://localhost:{match.group(1)}/metrics"
        with urllib.request.urlopen(url, context=scraper, timeout=TIMEOUT) as response:
            assert b"flowmanager_rpcs_total" in response.read()

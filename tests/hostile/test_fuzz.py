"""Property-based fuzz of a real server: no request gets a status it should not.

A real `python -m flowservice` runs as a subprocess with its address space
capped (`RLIMIT_AS`, 2 GiB), so a request that makes it allocate without
bound fails the test rather than the machine. Hypothesis sends it hostile
requests through a generic channel call (bytes in, bytes out), of two kinds
(see `fuzz_requests`): well-formed messages with hostile content, and raw
bytes that need not decode. For every call:

- the status is one a client can act on: OK, INVALID_ARGUMENT,
  FAILED_PRECONDITION, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED or UNAVAILABLE
  (never UNKNOWN or INTERNAL, which mean the server did not expect the request);
- neither the message nor the details (`grpc-status-details-bin`) carry Python
  exception text ("Traceback", "<class '...'>", "ValueError", ...), unless the
  caller wrote that text into the request and the server merely quotes it;
- afterwards the process is alive and answers Health/Check with SERVING;
- the server logged no traceback: no exception it did not anticipate, not
  even one the caller never saw because its deadline had passed first.

`make test` runs a fixed, modest set of examples (Hypothesis derandomized,
no shrinking, so it stays short even when it fails). `make fuzz` runs many
more with a random seed and shrinking. Variables:

- FUZZ_EXAMPLES: examples per test (default 50);
- FUZZ_SEED: a seed (random examples, shrinking on); unset, examples are fixed;
- FUZZ_SURVEY=1: record every bad reply instead of stopping at the first,
  restart the server when it dies, and fail at the end with a table of the
  classes found (status, method, message pattern) and their counts.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, example, given, seed, settings

from tests.hostile.fuzz_requests import (
    EXECUTE_STREAM,
    MESSAGE_REGRESSIONS,
    RAW_REGRESSIONS,
    FuzzCall,
    message_calls,
    raw_calls,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
ADDRESS_SPACE = 2 * 1024**3
"""RLIMIT_AS of the server process: far above what it needs (~0.7 GiB mapped idle)."""
CALL_TIMEOUT = 2.0
"""Deadline of each fuzzed call; a flow that runs longer ends DEADLINE_EXCEEDED."""
HEALTH_TIMEOUT = 10.0
"""Deadline of the Health/Check after each call: the server must still answer."""
STARTUP_TIMEOUT = 20.0
DEFAULT_EXAMPLES = 50

ALLOWED = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNAVAILABLE,
    }
)
# Text only Python's machinery writes: a traceback, a class repr, grpc's
# "Unexpected <class ...>", exception class names (ValueError, DecodeError,
# KeyError, ...), a stack frame.
PYTHON_TEXT = re.compile(
    r"Traceback \(most recent call last\)"
    r"|<class '"
    r"|Unexpected <"
    r"|\b[A-Z][A-Za-z]*(?:Error|Exception)\b"
    r'|File "[^"]*", line \d+'
)
# Port 0, and no drain: a killed fuzz server has nothing in flight worth waiting for.
_SERVER_FLAGS = (
    *("--address", "127.0.0.1:0", "--drain-delay", "0", "--grace-period", "1"),
    *("--store", "memory"),
)
_INCIDENT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# A traceback up to its exception line (the first line that is not indented).
_TRACEBACK = re.compile(r"^Traceback \(most recent call last\):\n(?:[ \t].*\n)*(\S.*)\n", re.M)
_LISTENING = re.compile(r"Flow Manager listening on 127\.0\.0\.1:(\d+)")
# Starts the server with its address space capped before anything is imported
# (preexec_fn is unsafe in a process with threads, as pytest's is after grpc).
_LIMITED_SERVER = (
    "import resource, runpy, sys; limit = int(sys.argv.pop(1)); "
    "resource.setrlimit(resource.RLIMIT_AS, (limit, limit)); "
    "runpy.run_module('flowservice', run_name='__main__', alter_sys=True)"
)


class FuzzServer:
    """A server subprocess under RLIMIT_AS and a channel to it; restartable."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._starts = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.channel: grpc.Channel | None = None
        self.log_path = log_dir / "server-0.log"
        self._log_offset = 0

    def start(self) -> None:
        """Starts a fresh server (killing the previous one) and connects to it."""
        self.stop()
        self.log_path = self._log_dir / f"server-{self._starts}.log"
        self._log_offset = 0
        self._starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("FLOWMANAGER_")}
        # glibc reserves 64 MiB of address space per malloc arena (up to 8 per
        # core): capped, so that RLIMIT_AS measures what the server allocates.
        env["MALLOC_ARENA_MAX"] = "2"
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-c", _LIMITED_SERVER, str(ADDRESS_SPACE), *_SERVER_FLAGS],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=log,
            )
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self._wait_for_port()}")

    def stop(self) -> None:
        """Closes the channel and kills the server, if any."""
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait(timeout=STARTUP_TIMEOUT)
            self.process = None

    def _wait_for_port(self) -> int:
        assert self.process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            match = _LISTENING.search(self.log_path.read_text(errors="replace"))
            if match:
                return int(match.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        pytest.fail(f"the server did not start:\n{self.log_path.read_text(errors='replace')}")

    def send(self, call: FuzzCall) -> tuple[grpc.StatusCode, list[str]]:
        """Makes the call (bytes in, bytes out); its status and every text of its error."""
        assert self.channel is not None
        try:
            if call.method == EXECUTE_STREAM:
                for _ in self.channel.unary_stream(call.method)(call.body, timeout=CALL_TIMEOUT):
                    pass
            else:
                self.channel.unary_unary(call.method)(call.body, timeout=CALL_TIMEOUT)
        except grpc.RpcError as error:
            return error.code(), _error_texts(error)
        return grpc.StatusCode.OK, []

    def new_tracebacks(self) -> list[str]:
        """The exception line of every traceback the server logged since the last look.

        A traceback in the log is an exception nobody anticipated: the server's
        own, or a built-in task's (a task's bug becomes its failure, logged).
        It counts even when the caller never saw it, because its deadline
        had passed first (a task that ran out of memory, say).
        """
        with self.log_path.open("rb") as log:
            log.seek(self._log_offset)
            text = log.read().decode(errors="replace")
        found = []
        read = 0
        for match in _TRACEBACK.finditer(text):
            found.append(match.group(1))
            read = match.end()
        # Up to the last complete traceback: one being written is read next time.
        self._log_offset += len(text[:read].encode())
        return found

    def liveness_problem(self) -> str | None:
        """Why the server is not alive and SERVING, or None when it is."""
        assert self.process is not None and self.channel is not None
        if self.process.poll() is not None:
            return f"server exited with code {self.process.returncode}"
        health = health_pb2_grpc.HealthStub(self.channel)
        try:
            reply = health.Check(health_pb2.HealthCheckRequest(), timeout=HEALTH_TIMEOUT)
        except grpc.RpcError as error:
            return f"Health/Check failed afterwards: {error.code().name}"
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return f"Health/Check answered {reply.status} afterwards"
        return None


def _error_texts(error: Any) -> list[str]:
    """The status message and the decoded `grpc-status-details-bin`, as text."""
    texts = [error.details() or ""]
    raw = dict(error.trailing_metadata() or ()).get("grpc-status-details-bin")
    if raw:
        status = status_pb2.Status.FromString(raw)
        try:
            texts.append(json_format.MessageToJson(status))
        except (TypeError, KeyError):  # a detail type this client does not know
            texts.append(status.message)
            texts.extend(repr(detail.value) for detail in status.details)
    return texts


assert error_details_pb2  # imported so that MessageToJson can unpack the details


def python_text(texts: list[str], body: bytes) -> str | None:
    """The first Python exception text in `texts` that the request did not itself contain."""
    sent = body.decode("utf-8", errors="replace")
    for text in texts:
        for match in PYTHON_TEXT.finditer(text):
            if match.group() not in sent:
                return match.group()
    return None


def _message_class(text: str) -> str:
    """A message with its variable parts (ids, numbers, quoted values) blanked, for grouping."""
    text = _INCIDENT.sub("<id>", text)
    text = re.sub(r"'[^']*'", "'…'", text)
    return re.sub(r"\d+", "N", text)[:160]


@dataclass
class Findings:
    """Bad replies seen so far; stops at the first unless surveying."""

    survey: bool
    problems: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    first: dict[str, FuzzCall] = field(default_factory=dict)

    def check(self, server: FuzzServer, call: FuzzCall) -> None:
        """Sends `call`, then checks its status, its texts and the server's health."""
        code, texts = server.send(call)
        method = call.method.rsplit("/", 1)[1]
        self.codes[f"{method} {code.name}"] += 1
        found = []
        if code not in ALLOWED:
            found.append(f"{code.name} {method}: {_message_class(texts[0])}")
        leaked = python_text(texts, call.body)
        if leaked is not None:
            found.append(f"Python text {leaked!r} in {code.name} {method}")
        alive = server.liveness_problem()
        if alive is not None:
            found.append(f"{alive} (after {method})")
        for logged in server.new_tracebacks():
            found.append(f"server logged a traceback: {_message_class(logged)} (after {method})")
        for problem in found:
            self.problems[problem] += 1
            self.first.setdefault(problem, call)
        if found and not self.survey:
            raise AssertionError(f"{'; '.join(found)}\nfull message: {texts[0]!r}")
        if alive is not None:
            server.start()  # surveying: carry on with a fresh server

    def report(self) -> str:
        """Every class of bad reply with its count, and the statuses seen overall."""
        lines = [f"{count:6d}  {problem}" for problem, count in self.problems.most_common()]
        lines.append(
            "statuses seen: " + ", ".join(f"{k}={v}" for k, v in sorted(self.codes.items()))
        )
        return "\n".join(lines)


def fuzz_settings(test: Callable[..., None]) -> Callable[..., None]:
    """Hypothesis settings from FUZZ_EXAMPLES and FUZZ_SEED (see the module docstring)."""
    fuzz_seed = os.environ.get("FUZZ_SEED")
    phases = [Phase.explicit, Phase.generate]
    if fuzz_seed:
        phases.append(Phase.shrink)
    configured: Callable[..., None] = settings(
        max_examples=int(os.environ.get("FUZZ_EXAMPLES", DEFAULT_EXAMPLES)),
        deadline=None,
        derandomize=not fuzz_seed,
        database=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
    )(test)
    return seed(int(fuzz_seed))(configured) if fuzz_seed else configured


@pytest.fixture
def fuzz_server(tmp_path: Path) -> Iterator[FuzzServer]:
    """A fresh server per test, so one test's damage cannot fail the other."""
    server = FuzzServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _run(server: FuzzServer, calls: Any, regressions: tuple[FuzzCall, ...]) -> None:
    findings = Findings(survey=os.environ.get("FUZZ_SURVEY") == "1")

    def fuzz(call: FuzzCall) -> None:
        findings.check(server, call)

    for regression in reversed(regressions):  # tried first, in every run, in this order
        fuzz = example(call=regression)(fuzz)
    fuzz = fuzz_settings(given(call=calls)(fuzz))

    try:
        fuzz()
    finally:
        print(f"\n{findings.report()}")  # shown with -s (make fuzz)
    if findings.problems:
        pytest.fail(f"bad replies by class:\n{findings.report()}", pytrace=False)
    assert server.liveness_problem() is None


def test_hostile_request_messages_get_only_actionable_statuses(fuzz_server: FuzzServer) -> None:
    _run(fuzz_server, message_calls(), MESSAGE_REGRESSIONS)


def test_raw_request_bytes_get_only_actionable_statuses(fuzz_server: FuzzServer) -> None:
    _run(fuzz_server, raw_calls(), RAW_REGRESSIONS)

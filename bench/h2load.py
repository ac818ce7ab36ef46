"""h2load, the HTTP/2 load generator of nghttp2, speaking gRPC with a pre-serialized body.

A gRPC call is an HTTP/2 POST to `/package.Service/Method` with
`content-type: application/grpc`, `te: trailers` and a length-prefixed
message as its body, so h2load can send one without knowing protobuf. It is
written in C and uses a small fraction of a core at the rates a Python server
reaches, so it is never the bottleneck.

HTTP 200 does not mean success in gRPC: the status is in `grpc-status`. A
server that fails a call before sending a message answers with a single
header block carrying `grpc-status`, which h2load prints with `-v`; so every
run is made with `-v`, and any nonzero `grpc-status` there fails the run. A
successful unary reply carries its message in DATA frames, so the run also
checks that every reply had data. `probe` checks one request with nghttp,
which prints trailers too, so `grpc-status: 0` is seen for real.
"""

from __future__ import annotations

import re
import resource
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ["H2loadError", "H2loadRun", "find_h2load", "percentile", "probe", "run_h2load"]

H2LOAD_TIMEOUT = 300.0
"""Seconds one h2load run may take before it is killed."""

_GRPC_HEADERS = ("-H", "content-type: application/grpc", "-H", "te: trailers")
_JSON_HEADERS = ("--h1", "-H", "content-type: application/json")
_FINISHED = re.compile(r"finished in ([\d.]+)(us|ms|s),")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
    r"(\d+) failed, (\d+) errored, (\d+) timeout"
)
_DATA_BYTES = re.compile(r"\((\d+)\) data")
_STATUS_2XX = re.compile(r"status codes: (\d+) 2xx")
_GRPC_STATUS = re.compile(r"grpc-status: (\d+)")
_UNIT_SECONDS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


class H2loadError(RuntimeError):
    """h2load is missing, failed, or a call did not succeed."""


@dataclass(frozen=True, slots=True)
class H2loadRun:
    """One h2load run: a fixed number of calls at a fixed number in flight."""

    requests: int
    """Calls made (all of them succeeded, or the run raised)."""
    seconds: float
    """Wall time of the run, from h2load."""
    latencies_us: tuple[int, ...]
    """Each call's time from request to end of response, in microseconds."""
    data_bytes: int
    """Bytes of response DATA received (gRPC frames)."""
    client_cpu_seconds: float
    """CPU time h2load itself used: it should be small next to the server's."""

    @property
    def rps(self) -> float:
        """Calls per second."""
        return self.requests / self.seconds


def find_h2load() -> str:
    """The path of h2load; `H2loadError` with what to install when it is missing."""
    path = shutil.which("h2load")
    if path is None:
        raise H2loadError(
            "h2load not found: install it with `apt-get install -y nghttp2-client` "
            "(`make bench` does this)"
        )
    return path


def run_h2load(
    *,
    url: str,
    body: Path,
    requests: int,
    connections: int,
    streams: int,
    min_data_bytes: int = 6,
    http1: bool = False,
) -> H2loadRun:
    """Makes `requests` calls to `url` with `body`, `connections` x `streams` in flight.

    Raises `H2loadError` unless every call got HTTP 200, no header block carried
    a nonzero `grpc-status`, and each reply had at least `min_data_bytes`
    bytes of DATA on average (a reply with a gRPC message has at least 6).
    `http1` sends the body as JSON over HTTP/1.1 instead (the REST peer,
    `bench.rest_peer`): one request at a time per connection, no pipelining.
    """
    with tempfile.TemporaryDirectory(prefix="h2load-") as tmp:
        log_file = Path(tmp) / "requests.tsv"
        out_file = Path(tmp) / "stdout.txt"
        command = [
            find_h2load(),
            "-v",
            f"--log-file={log_file}",
            "-n",
            str(requests),
            "-c",
            str(connections),
            "-m",
            str(streams),
            "-t",
            "1",
            "-d",
            str(body),
            *(_JSON_HEADERS if http1 else _GRPC_HEADERS),
            url,
        ]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with out_file.open("wb") as out:
            completed = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, timeout=H2LOAD_TIMEOUT, check=False
            )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        output = out_file.read_text(errors="replace")
        latencies = _latencies(log_file)
    summary = "\n".join(line for line in output.splitlines() if not line.startswith("[stream_id"))
    if completed.returncode != 0:
        raise H2loadError(f"h2load exited with {completed.returncode}:\n{summary[-2000:]}")
    finished = _FINISHED.search(output)
    counts = _REQUESTS.search(output)
    data = _DATA_BYTES.search(output)
    ok_statuses = _STATUS_2XX.search(output)
    if not (finished and counts and data and ok_statuses):
        raise H2loadError(f"cannot read h2load's summary:\n{summary[-2000:]}")
    total, _, done, succeeded, failed, errored, timed_out = map(int, counts.groups())
    bad_statuses = [int(code) for code in _GRPC_STATUS.findall(output) if code != "0"]
    data_bytes = int(data.group(1))
    problems = []
    if succeeded != requests or failed or errored or timed_out or done != total:
        problems.append(
            f"{succeeded} of {requests} succeeded, {failed} failed, {errored} errored, "
            f"{timed_out} timed out"
        )
    if int(ok_statuses.group(1)) != requests:
        problems.append(f"{ok_statuses.group(1)} of {requests} replies had an HTTP 2xx status")
    if bad_statuses:
        problems.append(
            f"{len(bad_statuses)} calls failed with grpc-status {sorted(set(bad_statuses))}"
        )
    if data_bytes < requests * min_data_bytes:
        problems.append(f"only {data_bytes} bytes of data for {requests} replies")
    if len(latencies) != requests:
        problems.append(f"{len(latencies)} latencies logged for {requests} requests")
    if problems:
        raise H2loadError(f"h2load run against {url} failed: " + "; ".join(problems))
    seconds = float(finished.group(1)) * _UNIT_SECONDS[finished.group(2)]
    client_cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return H2loadRun(requests, seconds, tuple(latencies), data_bytes, client_cpu)


def _latencies(log_file: Path) -> list[int]:
    """Per-request microseconds from h2load's --log-file (start, HTTP status, elapsed)."""
    latencies = []
    for line in log_file.read_text().splitlines():
        fields = line.split("\t")
        if len(fields) >= 3:
            latencies.append(int(fields[2]))
    return latencies


def percentile(values: list[int] | tuple[int, ...] | list[float], fraction: float) -> float:
    """The `fraction` quantile of `values` (inclusive method, as most tools report)."""
    if len(values) == 1:
        return float(values[0])
    cut = statistics.quantiles(values, n=1000, method="inclusive")
    return float(cut[round(fraction * 1000) - 1])


def probe(*, url: str, body: Path) -> int:
    """Sends `body` once with nghttp and returns the bytes of DATA in its reply.

    Raises `H2loadError` unless the reply's trailers say `grpc-status: 0`.
    """
    nghttp = shutil.which("nghttp")
    if nghttp is None:
        raise H2loadError("nghttp not found: install nghttp2-client")
    completed = subprocess.run(
        [nghttp, "-v", "-d", str(body), *_GRPC_HEADERS, url],
        capture_output=True,
        timeout=60,
        check=False,
    )
    output = completed.stdout.decode(errors="replace")
    statuses = _GRPC_STATUS.findall(output)
    if completed.returncode != 0 or statuses != ["0"]:
        raise H2loadError(
            f"probe of {url} did not succeed (exit {completed.returncode}, "
            f"grpc-status {statuses}):\n{output[-2000:]}"
        )
    return sum(int(n) for n in re.findall(r"recv DATA frame <length=(\d+)", output))

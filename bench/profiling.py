"""Where the time goes: profiles of the Execute path in the server and of an engine step.

The server is profiled from outside with py-spy (`--gil`: samples where a
thread holds the GIL, that is, Python work), with no change to the code under
test. The engine microbenchmark is profiled in-process with pyinstrument.
Each profile is summarised as the callees of a root function
(`FlowServicer.Execute` for a call, `Engine.execute` for the engine), each
with its share of all samples; what is on the stack below the root
(inclusive); and own (self) time. Shares become microseconds by multiplying
with the measured cost of one call or one step, which makes them estimates:
good for seeing what is big, not for the last microsecond.

Two biases to keep in mind. py-spy, stopping Python 3.11 at a sample, now and
then names as the innermost frame a function that has just returned (such as
`asyncio.current_task` after `DeadlineTimer.__enter__` called it), so its own
times are unreliable and only its inclusive times are reported. pyinstrument
hooks every Python call and return, which slows call-heavy code more than the
rest, so its shares lean towards functions called very often.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench.flows import REPO_ROOT
from bench.h2load import H2loadRun, run_h2load

__all__ = [
    "ENGINE_ROOT",
    "EXECUTE_ROOT",
    "ProfileSummary",
    "find_py_spy",
    "profile_engine",
    "profile_server",
    "pyinstrument_installed",
    "summarize",
]

EXECUTE_ROOT = "FlowServicer.Execute"
"""The handler of one Execute call: request conversion, engine and reply conversion."""
ENGINE_ROOT = "Engine.execute"
"""One execution in the microbenchmark."""
SAMPLE_RATE = 250
"""Samples per second."""
TOP = 15
"""Functions listed in each ranking."""


@dataclass(frozen=True, slots=True)
class ProfileSummary:
    """What one profile says, as shares of its samples."""

    samples: int
    """Samples taken while some thread held the GIL."""
    root: str
    """The function whose callees are broken down."""
    root_share: float
    """Share of samples inside `root`; the rest is outside it (for a call: the transport)."""
    callees: tuple[tuple[str, float], ...]
    """`root`'s direct callees (and "(self)"), with their shares of all samples, largest first."""
    self_time: tuple[tuple[str, float], ...]
    """Functions by their own samples (not their callees'), largest first."""
    self_time_inside_root: tuple[tuple[str, float], ...]
    """The same, counting only samples inside `root`."""
    inclusive_inside_root: tuple[tuple[str, float], ...]
    """Functions below `root` by the samples in which they are on the stack."""


def find_py_spy() -> str | None:
    """The path of py-spy in this interpreter's environment or on PATH, or None."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


def profile_server(
    py_spy: str, *, pid: int, seconds: float, load: dict[str, object]
) -> tuple[ProfileSummary, H2loadRun]:
    """Profiles server `pid` for `seconds` while h2load puts `load` (run_h2load's arguments) on it.

    The h2load run should last longer than `seconds`; it is checked like any other.
    """
    outcome: dict[str, H2loadRun | BaseException] = {}

    def drive() -> None:
        try:
            outcome["run"] = run_h2load(**load)  # type: ignore[arg-type]
        except BaseException as exc:
            outcome["error"] = exc

    driver = threading.Thread(target=drive, name="h2load")
    driver.start()
    time.sleep(0.5)  # let the load reach its steady state
    with tempfile.TemporaryDirectory(prefix="py-spy-") as tmp:
        raw = Path(tmp) / "profile.txt"
        _record(py_spy, ["--pid", str(pid), "--duration", str(max(1, round(seconds)))], raw)
        text = raw.read_text()
    driver.join()
    if "error" in outcome:
        raise RuntimeError(f"the load under the profile failed: {outcome['error']}")
    run = outcome["run"]
    assert isinstance(run, H2loadRun)
    return summarize(text, EXECUTE_ROOT), run


def profile_engine(command: list[str], root: str = ENGINE_ROOT) -> ProfileSummary:
    """Runs `command` (`python -m bench.engine_micro ...`) with `--profile` and summarises it."""
    with tempfile.TemporaryDirectory(prefix="pyinstrument-") as tmp:
        stacks = Path(tmp) / "stacks.txt"
        completed = subprocess.run(
            [*command, "--profile", str(stacks)],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"the engine profile failed:\n{completed.stderr[-3000:]}")
        return summarize(stacks.read_text(), root)


def pyinstrument_installed() -> bool:
    """Whether pyinstrument can be imported here."""
    return importlib.util.find_spec("pyinstrument") is not None


def _record(py_spy: str, target: list[str], output: Path) -> None:
    command = [
        py_spy,
        "record",
        "--gil",
        "--nolineno",
        "--rate",
        str(SAMPLE_RATE),
        "--format",
        "raw",
        "--output",
        str(output),
        *target,
    ]
    completed = subprocess.run(
        command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    if completed.returncode != 0 or not output.exists():
        raise RuntimeError(
            f"py-spy failed (exit {completed.returncode}): {completed.stderr[-2000:]}\n"
            "It needs ptrace permission (root, or CAP_SYS_PTRACE)."
        )


def summarize(raw: str, root: str) -> ProfileSummary:
    """Summarises collapsed stacks (py-spy's raw output): `frame;frame;... count` per line.

    Frames are `function (file)`; `root` matches a frame's function name.
    """
    total = 0
    inside = 0
    callees: Counter[str] = Counter()
    own: Counter[str] = Counter()
    own_inside: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        total += count
        own[frames[-1]] += count
        index = next(
            (i for i, frame in enumerate(frames) if frame.split(" (")[0] == root),
            None,
        )
        if index is None:
            continue
        inside += count
        own_inside[frames[-1]] += count
        for frame in set(frames[index + 1 :]):
            inclusive[frame] += count
        callees[frames[index + 1] if index + 1 < len(frames) else "(self)"] += count
    if not total:
        raise RuntimeError("the profile has no samples")

    def ranked(counter: Counter[str]) -> tuple[tuple[str, float], ...]:
        return tuple((name, count / total) for name, count in counter.most_common(TOP))

    return ProfileSummary(
        samples=total,
        root=root,
        root_share=inside / total,
        callees=ranked(callees),
        self_time=ranked(own),
        self_time_inside_root=ranked(own_inside),
        inclusive_inside_root=ranked(inclusive),
    )

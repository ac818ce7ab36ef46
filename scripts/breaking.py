"""`make breaking`: `buf breaking` between protos/ and the protos it replaces.

An incompatible change to the API (the WIRE_JSON rules of buf.yaml) fails
`make test`. The baseline it is compared with:

- BREAKING_AGAINST=<git revision>, when set (e.g. `main` on a branch);
- HEAD, when protos/ has uncommitted changes (a developer at work), so the
  edits are checked before they are committed;
- otherwise (CI, on a clean clone where the change under review is already
  committed) the parent of the newest commit that changed protos/: the
  newest API change against what it replaced. Unlike a plain HEAD~1 it also
  catches a breaking proto commit followed by commits that leave the protos
  alone. Older steps are not checked again: they landed, and some of them
  were breaking.

Without a baseline in the history (no git, one commit, a shallow clone) it
says so and passes: there is nothing to compare with.

Usage: python scripts/breaking.py [BUF]   (BUF defaults to node_modules/.bin/buf)
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

PROTOS = "protos"


@dataclass(frozen=True)
class Baseline:
    """The commit to compare protos/ with, and why it was chosen."""

    commit: str
    why: str


def _git(*args: str, cwd: Path) -> str | None:
    """git's output, stripped; None when git fails (no repository, unknown revision)."""
    try:
        done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find_baseline(repo: Path, against: str = "") -> Baseline | str:
    """The baseline for `repo`, or the reason there is none (a sentence to print)."""
    if _git("rev-parse", "--verify", "--quiet", "HEAD", cwd=repo) is None:
        return "no git history here, so no earlier protos to compare with"
    if against:
        why = "BREAKING_AGAINST"
    elif _git("status", "--porcelain", "--", PROTOS, cwd=repo):
        against, why = "HEAD", f"uncommitted changes under {PROTOS}/"
    else:
        last = _git("log", "-1", "--format=%h", "--", PROTOS, cwd=repo) or "HEAD"
        against, why = (
            f"{last}~1",
            f"the parent of {last}, the newest commit that changed {PROTOS}/",
        )
    commit = _git("rev-parse", "--verify", "--quiet", f"{against}^{{commit}}", cwd=repo)
    if commit is not None:
        return Baseline(commit, f"{against} ({why})")
    if _git("rev-parse", "--is-shallow-repository", cwd=repo) == "true":
        return (
            f"{against} ({why}) is not in this shallow clone; "
            "run 'git fetch --unshallow' to check the protos"
        )
    return f"{against} ({why}) does not exist: {PROTOS}/ has no earlier version to compare with"


def main(argv: list[str]) -> int:
    """Runs buf breaking against the baseline; its exit code, or 0 when there is none."""
    repo = Path.cwd()
    buf = argv[0] if argv else str(repo / "node_modules" / ".bin" / "buf")
    baseline = find_baseline(repo, os.environ.get("BREAKING_AGAINST", ""))
    if isinstance(baseline, str):
        print(f"breaking: skipped: {baseline}")
        return 0
    print(f"buf breaking: {PROTOS}/ against {baseline.why}", flush=True)
    against = f".git#ref={baseline.commit},subdir={PROTOS}"
    return subprocess.run([buf, "breaking", PROTOS, "--against", against], check=False).returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

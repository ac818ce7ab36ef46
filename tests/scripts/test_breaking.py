"""scripts/breaking.py: the baseline `make breaking` picks, and buf run against it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from scripts.breaking import Baseline, find_baseline
from tests.e2e.conftest import REPO_ROOT

BUF = REPO_ROOT / "node_modules" / ".bin" / "buf"
SCRIPT = REPO_ROOT / "scripts" / "breaking.py"

PROTO_V1 = """syntax = "proto3";
package demo.v1;
// A thing.
message Thing {
  // Its name.
  string name = 1;
  // Its size.
  int32 size = 2;
}
"""
PROTO_RENAMED = PROTO_V1.replace("string name = 1", "string title = 1")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    (tmp_path / "buf.yaml").write_text(
        "version: v2\nmodules:\n  - path: protos\nbreaking:\n  use: [WIRE_JSON]\n"
    )
    return tmp_path


def test_without_history_there_is_nothing_to_compare(repo: Path) -> None:
    assert isinstance(find_baseline(repo), str)


def test_the_only_commit_has_no_baseline(repo: Path) -> None:
    commit(repo, {"protos/demo/v1/demo.proto": PROTO_V1}, "api")

    assert "does not exist" in str(find_baseline(repo))


def test_the_parent_of_the_newest_proto_change_even_after_other_commits(repo: Path) -> None:
    first = commit(repo, {"protos/demo/v1/demo.proto": PROTO_V1}, "api")
    commit(repo, {"protos/demo/v1/demo.proto": PROTO_RENAMED}, "rename")
    commit(repo, {"README.md": "docs"}, "docs only")

    baseline = find_baseline(repo)

    assert isinstance(baseline, Baseline)
    assert baseline.commit == first


def test_uncommitted_protos_are_checked_against_head_and_against_wins(repo: Path) -> None:
    first = commit(repo, {"protos/demo/v1/demo.proto": PROTO_V1}, "api")
    head = commit(repo, {"README.md": "docs"}, "docs")
    (repo / "protos/demo/v1/demo.proto").write_text(PROTO_RENAMED)

    working = find_baseline(repo)
    chosen = find_baseline(repo, against=first)

    assert isinstance(working, Baseline) and working.commit == head
    assert isinstance(chosen, Baseline) and chosen.commit == first


def test_buf_fails_a_breaking_change_and_passes_a_compatible_one(repo: Path) -> None:
    commit(repo, {"protos/demo/v1/demo.proto": PROTO_V1}, "api")
    (repo / "protos/demo/v1/demo.proto").write_text(PROTO_RENAMED)
    renamed = subprocess.run(
        [sys.executable, str(SCRIPT), str(BUF)], cwd=repo, capture_output=True, text=True
    )
    added = PROTO_V1.replace("}\n", "  // Its colour.\n  string colour = 3;\n}\n")
    (repo / "protos/demo/v1/demo.proto").write_text(added)
    compatible = subprocess.run(
        [sys.executable, str(SCRIPT), str(BUF)], cwd=repo, capture_output=True, text=True
    )

    assert renamed.returncode != 0, renamed.stdout
    assert compatible.returncode == 0, compatible.stdout + compatible.stderr

"""The README and docs/ stay true: examples run somewhere, links resolve, settings documented.

The examples themselves run in test_grpcurl_logic.py and test_grpcurl_control.py;
these tests make sure none of them goes unread and the pages hold together.
"""

from __future__ import annotations

import re
import shlex

import pytest

from flowservice.settings import Settings
from tests.e2e.conftest import EXAMPLE_PAGES, REPO_ROOT
from tests.e2e.test_grpcurl_logic import readme_examples


def pages() -> list[str]:
    return ["README.md", *sorted(f"docs/{p.name}" for p in (REPO_ROOT / "docs").glob("*.md"))]


# (operating.md has none; calling-services.md's run against their own server, 127.0.0.1:50061,
# in test_mesh_readme.py.)
@pytest.mark.parametrize(
    "page", [p for p in EXAMPLE_PAGES if p not in ("docs/operating.md", "docs/calling-services.md")]
)
def test_every_example_page_has_examples_the_tests_run(page: str) -> None:
    text = (REPO_ROOT / page).read_text()

    run = [command for command, _ in readme_examples() if f"```sh\n{command}\n```" in text]

    assert run, f"{page} has no grpcurl example with its output that the tests run"


@pytest.mark.parametrize("page", pages())
def test_relative_links_resolve(page: str) -> None:
    text = (REPO_ROOT / page).read_text()
    base = (REPO_ROOT / page).parent

    broken = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if re.match(r"[a-z]+:", target):
            continue  # https: and the like
        path = (base / target).resolve()
        if not path.exists():
            broken.append(target)

    assert broken == []


def test_every_flag_and_variable_is_in_the_operating_page() -> None:
    text = (REPO_ROOT / "docs" / "operating.md").read_text()

    missing = [
        name for pair in Settings.variables().items() for name in pair if f"`{name}" not in text
    ]

    assert missing == []


def test_following_the_readme_writes_nothing_into_the_repository() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    commands = [
        line
        for block in re.findall(r"```sh\n(.*?)```", readme, re.S)
        for line in block.splitlines()
    ]

    written = []
    for command in commands:
        words = shlex.split(command, comments=True)
        written += [words[i + 1] for i, word in enumerate(words[:-1]) if word in (">", "-o")]

    assert written, "the README's flowctl example writes files: this test should see them"
    assert [path for path in written if not path.startswith("/tmp/")] == []

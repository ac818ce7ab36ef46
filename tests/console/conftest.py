"""Fixtures for the console's end-to-end tests: a real server, Debian's Chromium, Playwright.

The server is `python -m flowservice` with `--http-address` (through
`tests.http.conftest.http_serving`), serving the console that `make` built
into console/dist. The browser is Debian's Chromium (`/usr/bin/chromium`,
installed by `make system-packages`), driven by pytest-playwright's `page`
fixture: Playwright's own browser download cannot work here, so
`executable_path` points it at Debian's.

Screenshots go to a temporary folder, or, with `CONSOLE_SCREENSHOTS=1`
(`make console-screenshots`), to docs/images/console-*.png, the pictures the
README and docs/console.md show.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserType, Page, Playwright, expect, sync_playwright

from tests.http.conftest import HttpServer, http_serving
from tests.server_process import REPO_ROOT

__all__ = ["Console", "example"]

CHROMIUM = Path("/usr/bin/chromium")
DIST = REPO_ROOT / "console" / "dist"
IMAGES = REPO_ROOT / "docs" / "images"
EXPECT_TIMEOUT_MS = 20_000
"""How long an expectation on the page may wait: a bound on a hang, not a timing."""


def example(name: str) -> str:
    """The text of examples/`name`."""
    return (REPO_ROOT / "examples" / name).read_text()


@pytest.fixture(scope="session")
def base_url() -> str | None:
    """None: the tests open full URLs of their own server.

    Overrides the fallback fixture of pytest-playwright (used without
    pytest-base-url), which is a method of a plugin object: pytest 9 warns
    about that, and `filterwarnings = error` would fail every test.
    """
    return None


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, Any]) -> dict[str, Any]:
    """pytest-playwright's launch arguments, with Debian's Chromium as the browser."""
    assert CHROMIUM.exists(), "Chromium is not installed: `make system-packages` installs it"
    return {**browser_type_launch_args, "executable_path": str(CHROMIUM)}


# pytest-playwright keeps Playwright, and with it an event loop that a greenlet
# runs, for the whole session: every asyncio test after these ones would fail
# ("Cannot run the event loop while another loop is running"). These
# overrides of its fixtures scope Playwright and the browser to a module,
# stopped before the next module's tests; `context` and `page` are its own.


@pytest.fixture(scope="module")
def playwright(_pw_api_request_contexts: Any) -> Iterator[Playwright]:
    """Playwright (its sync API), started for one module."""
    with sync_playwright() as running:
        if _pw_api_request_contexts:
            _pw_api_request_contexts.instrument(running)
        yield running


@pytest.fixture(scope="module")
def browser_type(playwright: Playwright) -> BrowserType:
    """Chromium, the only browser here."""
    return playwright.chromium


@pytest.fixture(scope="module")
def launch_browser(
    browser_type_launch_args: dict[str, Any], browser_type: BrowserType
) -> Callable[..., Browser]:
    """Launches Debian's Chromium with pytest-playwright's arguments."""

    def launch(**kwargs: Any) -> Browser:
        return browser_type.launch(**{**browser_type_launch_args, **kwargs})

    return launch


@pytest.fixture(scope="module")
def browser(launch_browser: Callable[..., Browser]) -> Iterator[Browser]:
    """One headless Chromium for a module's tests."""
    launched = launch_browser()
    yield launched
    launched.close()


@pytest.fixture(scope="module")
def browser_context_args() -> dict[str, Any]:
    """Every page at 1280x800, the laptop size the console is designed for."""
    return {"viewport": {"width": 1280, "height": 800}}


@pytest.fixture(scope="module")
def console_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """One server with an HTTP port serving the built console, shared by a module's tests."""
    assert (DIST / "index.html").exists(), "the console is not built: run `make console`"
    log = tmp_path_factory.mktemp("console") / "server.log"
    with http_serving(log, ["--store", "memory"]) as running:
        yield running


class Console:
    """The console in a page, with the steps the tests share."""

    def __init__(self, page: Page, server: HttpServer, shots: Path) -> None:
        self.page = page
        self.server = server
        self._shots = shots
        expect.set_options(timeout=EXPECT_TIMEOUT_MS)
        page.set_default_timeout(EXPECT_TIMEOUT_MS)

    def open(self, path: str = "/") -> None:
        """Opens `path` of the console."""
        self.page.goto(self.server.url + path)

    def paste_flow(self, text: str) -> None:
        """Opens the Flows page, pastes `text` and waits until it is drawn and validated."""
        self.open("/flows")
        self.page.locator("#flow-editor").fill(text)
        expect(self.page.locator("#flow-graph")).to_have_attribute("data-state", "drawn")
        expect(self.page.locator(".issues")).to_have_attribute("data-valid", "true")

    def run(self, status: str) -> None:
        """Runs the pasted flow from the Run page and waits until it ends with `status`."""
        self.page.locator("#to-run").click()
        expect(self.page.locator("#run-graph")).to_have_attribute("data-state", "drawn")
        self.page.locator("#run").click()
        expect(self.page.locator("#run-status")).to_have_attribute("data-status", status)

    def task(self, name: str, graph: str = "") -> Any:
        """The node of task `name` (in the graph with id `graph`, or the page's only graph)."""
        return self.page.locator(f"{graph} .node[data-task={json.dumps(name)}]".strip())

    def screenshot(self, name: str) -> Path:
        """A screenshot of the whole page, as console-`name`.png."""
        path = self._shots / f"console-{name}.png"
        self.page.screenshot(path=path, full_page=True)
        return path


@pytest.fixture
def console(page: Page, console_server: HttpServer, tmp_path: Path) -> Console:
    """The console of the module's server in a fresh page."""
    shots = IMAGES if os.environ.get("CONSOLE_SCREENSHOTS") == "1" else tmp_path
    return Console(page, console_server, shots)

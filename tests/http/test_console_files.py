"""The HTTP port serves the built web console at `/`, and says so when it is not built."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.http.conftest import HttpServer, curl, http_serving

INDEX = b"<!doctype html><title>Flow Manager</title><div id=app></div>"
SCRIPT = b"console.log('flow manager');"


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """A server whose --console-dir is a small built console, beside a secret file."""
    root = tmp_path_factory.mktemp("console")
    dist = root / "dist"
    (dist / "assets").mkdir(parents=True)
    (dist / "index.html").write_bytes(INDEX)
    (dist / "assets" / "app-1a2b.js").write_bytes(SCRIPT)
    (root / "secret.txt").write_text("not for the web")
    (dist / "escape").symlink_to(root / "secret.txt")
    with http_serving(root / "server.log", ["--store", "memory", "--console-dir", str(dist)]) as s:
        yield s


def get(url: str, *args: str) -> tuple[int, dict[str, str], bytes]:
    """GETs `url` with curl: the status, the headers (lower-case names) and the body."""
    result = curl("-i", *args, url)
    assert result.returncode == 0, result.stderr.decode()
    head, _, body = result.stdout.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return int(status_line.split()[1]), headers, body


def test_the_root_is_the_index(console: HttpServer) -> None:
    status, headers, body = get(console.url + "/")

    assert (status, body) == (200, INDEX)
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert headers["cache-control"] == "no-cache"


def test_a_deep_link_is_the_index_for_the_console_router(console: HttpServer) -> None:
    status, _, body = get(console.url + "/executions/0b5e2c1a-aaaa")

    assert (status, body) == (200, INDEX)


def test_an_asset_is_served_with_its_type_and_kept_long(console: HttpServer) -> None:
    status, headers, body = get(console.url + "/assets/app-1a2b.js")

    assert (status, body) == (200, SCRIPT)
    assert headers["content-type"].startswith(("text/javascript", "application/javascript"))
    assert "immutable" in headers["cache-control"]


def test_a_missing_asset_is_not_found_rather_than_the_index(console: HttpServer) -> None:
    status, _, body = get(console.url + "/assets/gone-9z.js")

    assert status == 404
    assert body != INDEX


@pytest.mark.parametrize("path", ["/../secret.txt", "/%2e%2e/secret.txt", "/escape"])
def test_nothing_outside_the_console_is_served(console: HttpServer, path: str) -> None:
    status, _, body = get(console.url + path, "--path-as-is")

    assert b"not for the web" not in body
    assert status in (200, 404)  # the index (a deep link) or not found, never the file


def test_a_console_that_is_not_built_is_a_short_plain_page(tmp_path: Path) -> None:
    missing = tmp_path / "no-dist"
    with http_serving(
        tmp_path / "server.log", ["--store", "memory", "--console-dir", str(missing)]
    ) as server:
        status, headers, body = get(server.url + "/executions/x")

    assert status == 404
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert b"not built" in body

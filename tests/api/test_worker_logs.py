"""A worker started by `--workers` names itself on every log line."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from flowservice.observability import configure_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    yield
    root.handlers[:], root.level = saved[0], saved[1]


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize("log_format", ["console", "json"])
def test_each_line_names_the_worker(log_format: str, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", log_format, worker=1)
    logging.getLogger("flowservice.server").info("listening on %s", "127.0.0.1:1")

    line = capsys.readouterr().err.strip()
    if log_format == "json":
        assert json.loads(line)["worker"] == 1
    else:
        assert " INFO worker 1 flowservice.server: listening on 127.0.0.1:1" in line


@pytest.mark.usefixtures("restored_logging")
@pytest.mark.parametrize("log_format", ["console", "json"])
def test_a_server_on_its_own_names_no_worker(
    log_format: str, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("INFO", log_format)
    logging.getLogger("flowservice.server").info("listening")

    assert "worker" not in capsys.readouterr().err

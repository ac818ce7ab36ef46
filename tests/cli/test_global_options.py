"""flowctl's server options work before the command as well as after it."""

from __future__ import annotations

import pytest

from flowservice.cli import _connection, _parser
from flowservice.cli.commands import Connection
from flowservice.client import DEFAULT_ADDRESS
from tests.cli.conftest import Flowctl
from tests.e2e.conftest import EXAMPLES, RunningServer


@pytest.mark.parametrize("command", ["run", "validate"])
def test_server_before_the_command_is_used(
    flowctl: Flowctl, server: RunningServer, command: str
) -> None:
    flow_file = str(EXAMPLES / "seed-flow.json")

    result = flowctl("--server", server.address, "--timeout", "20", command, flow_file)

    assert result.returncode == 0, result.stderr


def test_options_after_the_command_win_and_headers_from_both_places_are_sent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FLOWCTL_SERVER", raising=False)
    argv = ["--server", "a:1", "-H", "x-one: 1", "--timeout", "9", "run", "f.json"]
    argv += ["--server", "b:2", "-H", "x-two: 2"]

    connection = _connection(_parser().parse_args(argv))

    assert connection == Connection(
        server="b:2",
        timeout=9.0,
        connect_timeout=5.0,
        metadata=(("x-one", "1"), ("x-two", "2")),
    )


def test_without_server_options_the_defaults_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLOWCTL_SERVER", raising=False)

    connection = _connection(_parser().parse_args(["validate", "f.json"]))

    assert connection == Connection(
        server=DEFAULT_ADDRESS, timeout=None, connect_timeout=5.0, metadata=()
    )

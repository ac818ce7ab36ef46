"""Server settings from flags and FLOWMANAGER_* variables."""

from __future__ import annotations

import dataclasses

import pytest

from flowservice.limits import Limits
from flowservice.settings import Settings


def test_variables_set_defaults_and_flags_win() -> None:
    settings = Settings.from_args(
        ["--max-tasks", "7"],
        {
            "FLOWMANAGER_MAX_TASKS": "5",
            "FLOWMANAGER_LOG_FORMAT": "json",
            "FLOWMANAGER_WORKERS": "3",
        },
    )

    assert settings.limits.max_tasks == 7
    assert settings.log_format == "json"
    assert settings.workers == 3


@pytest.mark.parametrize(
    ("variable", "value", "complaint"),
    [
        ("FLOWMANAGER_LOG_LEVEL", "verbose", "argument --log-level: invalid choice: 'VERBOSE'"),
        ("FLOWMANAGER_LOG_FORMAT", "xml", "argument --log-format: invalid choice: 'xml'"),
        ("FLOWMANAGER_TASK_THREADS", "abc", "argument --task-threads: invalid int value: 'abc'"),
        ("FLOWMANAGER_MAX_RUN_TIME", "-1", "max_run_time must be positive"),
    ],
)
def test_a_bad_variable_is_a_usage_error_not_a_traceback(
    variable: str, value: str, complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        Settings.from_args([], {variable: value})

    assert exited.value.code == 2
    [error_line] = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert complaint in error_line


@pytest.mark.parametrize(
    ("variable", "value", "reuse_port", "pin_workers"),
    [
        ("FLOWMANAGER_REUSE_PORT", "1", True, True),
        ("FLOWMANAGER_REUSE_PORT", "0", False, True),
        ("FLOWMANAGER_NO_PIN_WORKERS", "true", False, False),
        ("FLOWMANAGER_NO_PIN_WORKERS", "", False, True),
    ],
)
def test_switches_have_variables_too(
    variable: str, value: str, reuse_port: bool, pin_workers: bool
) -> None:
    settings = Settings.from_args([], {variable: value})

    assert (settings.reuse_port, settings.pin_workers) == (reuse_port, pin_workers)


def test_a_switch_variable_that_is_not_a_boolean_is_a_usage_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exited:
        Settings.from_args([], {"FLOWMANAGER_REUSE_PORT": "maybe"})

    assert exited.value.code == 2
    assert "FLOWMANAGER_REUSE_PORT" in capsys.readouterr().err


def test_the_flowmanager_variable_wins_over_opentelemetrys_own() -> None:
    otel_only = Settings.from_args([], {"OTEL_EXPORTER_OTLP_ENDPOINT": "otel:4317"})
    both = Settings.from_args(
        [], {"OTEL_EXPORTER_OTLP_ENDPOINT": "otel:4317", "FLOWMANAGER_OTLP_ENDPOINT": "fm:4317"}
    )

    assert (otel_only.otlp_endpoint, both.otlp_endpoint) == ("otel:4317", "fm:4317")


def test_help_names_every_variable_and_never_an_empty_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        Settings.from_args(["--help"], {})
    # argparse wraps lines; the words are what matter.
    text = " ".join(capsys.readouterr().out.split())

    assert "default )" not in text
    missing = [v for v in Settings.variables().values() if v not in text]
    assert missing == []
    switches_and_a_limit = {
        "--no-pin-workers": "FLOWMANAGER_NO_PIN_WORKERS",
        "--reuse-port": "FLOWMANAGER_REUSE_PORT",
        "--max-run-time": "FLOWMANAGER_MAX_RUN_TIME",
    }
    assert switches_and_a_limit.items() <= Settings.variables().items()


def test_every_limit_is_set_by_its_flag() -> None:
    """A limit added to `Limits` without a line in `_LIMIT_FLAGS` keeps its default: caught here."""
    flags = {f"--{field.name.replace('_', '-')}": "7" for field in dataclasses.fields(Limits)}
    del flags["--default-max-steps"], flags["--max-steps-ceiling"]
    flags |= {"--step-limit": "9", "--step-limit-ceiling": "99", "--max-expression-seconds": "0.25"}

    limits = Settings.from_args([word for pair in flags.items() for word in pair], {}).limits

    assert limits.max_results_bytes == 7
    assert limits.max_expression_seconds == 0.25
    assert (limits.default_max_steps, limits.max_steps_ceiling) == (9, 99)
    unchanged = [
        f.name
        for f in dataclasses.fields(Limits)
        if getattr(limits, f.name) == getattr(Limits(), f.name)
    ]
    assert unchanged == []

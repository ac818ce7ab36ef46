"""Server settings from flags and FLOWMANAGER_* variables."""

from __future__ import annotations

import pytest

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

"""flowctl's exit codes, and the one error type its commands raise to stop with one.

A command raises `CliError` with a message for people and the exit code that
goes with it; `flowctl.main` prints the message and returns the code, so no
command prints its own fatal errors or calls `sys.exit`.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["CliError", "ExitCode"]


class ExitCode(IntEnum):
    """What flowctl's exit status means; scripts may rely on these values."""

    COMPLETED = 0
    """The flow completed (run), the flow is valid (validate), the graph was drawn (graph)."""
    FLOW_DID_NOT_COMPLETE = 1
    """The flow ran and ended FAILED, TIMED_OUT or CANCELLED."""
    USAGE = 2
    """Bad arguments, an unreadable or malformed file, or an invalid flow."""
    SERVER = 3
    """The server could not be reached, or answered with an unexpected RPC error."""
    INTERRUPTED = 130
    """Ctrl-C (128 + SIGINT, as shells report it)."""
    BROKEN_PIPE = 141
    """The reader of standard output went away (128 + SIGPIPE, as shells report it)."""


class CliError(Exception):
    """Stops a command: `message` goes to stderr, `exit_code` is returned."""

    message: str
    """One or more lines for people, without the `flowctl:` prefix."""
    exit_code: ExitCode
    """The exit status to end with."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.USAGE) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code

"""Structured logs: one JSON object a line, or a readable console format.

Every record carries the execution, flow and task it concerns (from the
`extra` the engine passes) and the caller's request id, taken from the
`x-request-id` metadata by the API layer and kept in a context variable.
A process started by `--workers` also names itself (`worker 1`), so the
lines of several workers sharing one terminal or log stream tell apart.
When authentication is on, the caller's identity and its client
certificate's SAN (mTLS) are kept and logged the same way.
"""

from __future__ import annotations

import contextvars
import json
import logging
from datetime import UTC, datetime

__all__ = [
    "CONTEXT_FIELDS",
    "configure_logging",
    "identity_var",
    "peer_var",
    "request_id_var",
]

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="")
"""The caller's request id for the call being handled ("" when it sent none)."""

identity_var: contextvars.ContextVar[str] = contextvars.ContextVar("identity", default="")
"""Who makes the call being handled (`jwt:<sub>`, `token:<name>`, `mtls:<SAN>`); "" when
authentication is off."""

peer_var: contextvars.ContextVar[str] = contextvars.ContextVar("peer", default="")
"""The SAN of the client certificate of the call being handled ("" without mTLS)."""

CONTEXT_FIELDS = ("request_id", "identity", "peer", "execution_id", "flow_id", "task", "status")
"""Fields copied from a record (or the request context) into every log line that has them."""


_CONTEXT_VARIABLES = (
    ("request_id", request_id_var),
    ("identity", identity_var),
    ("peer", peer_var),
)


class _ContextFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        for name, variable in _CONTEXT_VARIABLES:
            if not getattr(record, name, ""):
                setattr(record, name, variable.get())
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, worker, message, context, exception."""

    def __init__(self, worker: int = -1) -> None:
        super().__init__()
        self._worker = worker

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
        }
        if self._worker >= 0:
            line["worker"] = self._worker
        line["message"] = record.getMessage()
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, "")
            if value:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


class ConsoleFormatter(logging.Formatter):
    """A readable line with the context appended as key=value pairs."""

    def __init__(self, worker: int = -1) -> None:
        who = f"worker {worker} " if worker >= 0 else ""
        super().__init__(f"%(asctime)s %(levelname)s {who}%(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        message = record.getMessage()
        context = " ".join(
            f"{name}={value}"
            for name in CONTEXT_FIELDS
            # Values the message already shows are not repeated.
            if (value := getattr(record, name, "")) and str(value) not in message
        )
        if not context:
            return text
        first, newline, rest = text.partition("\n")
        return f"{first} [{context}]{newline}{rest}"


def configure_logging(level: str, log_format: str, worker: int = -1) -> None:
    """Sets up the root logger: `log_format` is `json` or `console`.

    `worker` is the process's number among `--workers`, written on every
    line; -1 (a server on its own) writes none.
    """
    handler = logging.StreamHandler()
    formatter = JsonFormatter if log_format == "json" else ConsoleFormatter
    handler.setFormatter(formatter(worker))
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)

"""CEL expressions: compiled and type-checked once, evaluated per step.

Flow Manager uses Google's C++ CEL runtime (`cel-expr-python`): it type-checks
at compile time (syntax errors, undeclared names, impossible operand types,
each with a line and column), evaluates in microseconds, and bounds every
evaluation by its comprehension iteration budget. docs/cel.md records the
comparison with the other implementations.

Expressions see three variables, all dynamically typed: `input`, `tasks` and
`result` (see `VARIABLES`; the engine keeps their values up to date).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cel_expr_python import cel

__all__ = [
    "ITERATION_BUDGET",
    "CompileProblem",
    "CompiledExpression",
    "ExpressionError",
    "compile_expression",
]

ITERATION_BUDGET = 10_000
"""Comprehension iterations one evaluation may take: the CEL runtime's fixed budget."""

VARIABLES = ("input", "tasks", "result")
"""The names every expression may use."""

_ENV = cel.NewEnv(variables={name: cel.Type.DYN for name in VARIABLES})
_ERROR_LINE = re.compile(r"ERROR: <input>:(\d+):(\d+): (.*)")


@dataclass(frozen=True, slots=True)
class CompileProblem:
    """Why an expression does not compile, and where."""

    line: int
    """1-based line of the problem."""
    column: int
    """1-based column of the problem."""
    reason: str
    """What is wrong, from the CEL checker."""

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.reason}"


class ExpressionError(Exception):
    """An expression failed while being evaluated (missing key, wrong type, budget)."""


class CompiledExpression:
    """A checked CEL program, ready to evaluate many times."""

    __slots__ = ("_program", "returns_bool", "source")

    def __init__(self, source: str, program: Any) -> None:
        self.source = source
        """The expression's text."""
        self._program = program
        self.returns_bool = program.return_type().name() in ("BOOL", "DYN")
        """False when the checker proved the value is never a bool."""

    @property
    def return_type(self) -> str:
        """The checker's name for the type of the value (`BOOL`, `INT`, `DYN`, ...)."""
        return str(self._program.return_type().name())

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """The expression's value as plain Python data; `ExpressionError` when it fails."""
        try:
            value = self._program.eval(data=variables)
        except RuntimeError as exc:
            raise ExpressionError(_plain_reason(str(exc))) from None
        if value.type() == cel.Type.ERROR:
            raise ExpressionError(_plain_reason(str(value.value())))
        return _plain(value.plain_value())

    def evaluate_bool(self, variables: Mapping[str, Any]) -> bool:
        """The expression's value, which must be a bool; `ExpressionError` otherwise."""
        value = self.evaluate(variables)
        if not isinstance(value, bool):
            raise ExpressionError(
                f"the expression produced {type(value).__name__} {value!r}, not a bool"
            )
        return value

    def constant_value(self) -> Any:
        """The value when the expression uses no variable, else None (used for warnings)."""
        try:
            return self.evaluate({})
        except ExpressionError:
            return None


def compile_expression(source: str) -> CompiledExpression | list[CompileProblem]:
    """Compiles and type-checks `source`; the problems found when it does not compile."""
    try:
        return CompiledExpression(source, _ENV.compile(source))
    except RuntimeError as exc:
        problems = [
            CompileProblem(int(line), int(column), reason.strip())
            for line, column, reason in _ERROR_LINE.findall(str(exc))
        ]
        return problems or [CompileProblem(1, 1, _plain_reason(str(exc)))]


def _plain_reason(message: str) -> str:
    """CEL's status text without its status-code wrapping."""
    message = re.sub(r"^[A-Z_]+: ", "", message.strip())
    message = re.sub(r" \[[A-Z_]+\]$", "", message)
    if "Iteration budget exceeded" in message:
        return (
            f"evaluation exceeded CEL's budget of {ITERATION_BUDGET} comprehension "
            "iterations (max_expression_iterations)"
        )
    return message


def _plain(value: Any) -> Any:
    """Converts CEL's plain values to JSON-like data (map keys to strings)."""
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value

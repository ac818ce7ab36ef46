"""CEL expressions: compiled and type-checked once, evaluated per step.

Flow Manager uses Google's C++ CEL runtime (`cel-expr-python`): it type-checks
at compile time (syntax errors, undeclared names, impossible operand types,
each with a line and column), evaluates in microseconds, and bounds every
evaluation by its comprehension iteration budget. docs/cel.md records the
comparison with the other implementations.

The runtime does not bound the memory an evaluation allocates, so three
bounds are added here (`flowservice.expression_bounds` explains the costs):
an expression that could copy data without bound (a concatenation inside a
comprehension, a long chain of them) does not compile; one that uses `map`
or `filter` (quadratic in their range) refuses data whose lists or maps are
longer than `MAX_LIST_ITEMS`; and a value is converted to Python only up to
`MAX_RESULT_BYTES` (10,000 references to one large string are small inside
CEL, not once copied out).

Expressions see three variables, all dynamically typed: `input`, `tasks` and
`result` (see `VARIABLES`; the engine keeps their values up to date).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cel_expr_python import cel

from flowservice.expression_bounds import Inspection, inspect_expression

__all__ = [
    "ITERATION_BUDGET",
    "MAX_LIST_ITEMS",
    "MAX_RESULT_BYTES",
    "CompileProblem",
    "CompiledExpression",
    "ExpressionError",
    "compile_expression",
]

ITERATION_BUDGET = 10_000
"""Comprehension iterations one evaluation may take: the CEL runtime's fixed budget."""

MAX_LIST_ITEMS = 1_000
"""The most items a list or map may hold in the data an expression using `map` or
`filter` reads. Their result list is copied at each append, so one over n items
takes about 16 * n * n bytes, and all those of one evaluation at most
16 * ITERATION_BUDGET * n: 160 MB at this bound. Reported as `max_expression_list_items`."""

MAX_RESULT_BYTES = 4 * 1024 * 1024
"""The size one evaluation's value may have once converted (string and bytes lengths,
8 bytes for anything else): the default `max_request_bytes`, so an input mapping
can pass on anything a request could carry. Reported as `max_expression_result_bytes`."""

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

    __slots__ = ("_checked_paths", "_program", "returns_bool", "source")

    def __init__(self, source: str, program: Any, inspection: Inspection) -> None:
        self.source = source
        """The expression's text."""
        self._program = program
        # Only expressions that append pay for a look at the lengths in their data.
        self._checked_paths = inspection.read_paths if inspection.appends else ()
        self.returns_bool = program.return_type().name() in ("BOOL", "DYN")
        """False when the checker proved the value is never a bool."""

    @property
    def return_type(self) -> str:
        """The checker's name for the type of the value (`BOOL`, `INT`, `DYN`, ...)."""
        return str(self._program.return_type().name())

    def evaluate(self, variables: Mapping[str, Any]) -> Any:
        """The expression's value as plain Python data; `ExpressionError` when it fails."""
        for path in self._checked_paths:
            _check_lengths(path, variables)
        try:
            value = self._program.eval(data=variables)
        except RuntimeError as exc:
            raise ExpressionError(_plain_reason(str(exc))) from None
        if value.type() == cel.Type.ERROR:
            raise ExpressionError(_plain_reason(str(value.value())))
        return _ResultBudget().plain(value)

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
        program = _ENV.compile(source)
    except RuntimeError as exc:
        problems = [
            CompileProblem(int(line), int(column), reason.strip())
            for line, column, reason in _ERROR_LINE.findall(str(exc))
        ]
        return problems or [CompileProblem(1, 1, _plain_reason(str(exc)))]
    inspection = inspect_expression(program.serialize(), VARIABLES)
    if inspection.problems:
        return [_at(source, problem.offset, problem.reason) for problem in inspection.problems]
    return CompiledExpression(source, program, inspection)


def _at(source: str, offset: int, reason: str) -> CompileProblem:
    """A problem at a 0-based character offset of `source`."""
    line_start = source.rfind("\n", 0, offset) + 1
    return CompileProblem(source.count("\n", 0, offset) + 1, offset - line_start + 1, reason)


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


def _check_lengths(path: tuple[str, ...], variables: Mapping[str, Any]) -> None:
    """`ExpressionError` when the data at `path` holds a list or map above `MAX_LIST_ITEMS`."""
    value: Any = variables
    for key in path:
        if not isinstance(value, Mapping) or key not in value:
            return  # missing: the evaluation reports it
        value = value[key]
    pending = [value]
    while pending:
        value = pending.pop()
        if isinstance(value, Mapping):
            items: Any = value.values()
        elif isinstance(value, list | tuple):
            items = value
        else:
            continue
        if len(items) > MAX_LIST_ITEMS:
            raise ExpressionError(
                f"{'.'.join(path)} holds a list or map of {len(items)} items; an "
                f"expression using map or filter may read at most {MAX_LIST_ITEMS} "
                "(max_expression_list_items)"
            )
        pending.extend(item for item in items if isinstance(item, Mapping | list | tuple))


class _ResultBudget:
    """Converts a CEL value to JSON-like data (map keys to strings), up to `MAX_RESULT_BYTES`.

    Lists and maps are opened one level at a time, so conversion stops as soon
    as the budget is spent: at most one leaf value beyond it is ever copied.
    """

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_RESULT_BYTES

    def plain(self, value: Any) -> Any:
        kind = value.type()
        if kind == cel.Type.LIST:
            self._spend(8)
            return [self.plain(item) for item in value.value()]
        if kind == cel.Type.MAP:
            self._spend(8)
            result = {}
            for key, item in value.value().items():
                name = str(key)
                self._spend(len(name))
                result[name] = self.plain(item)
            return result
        leaf = value.value()
        self._spend(len(leaf) if isinstance(leaf, str | bytes | bytearray) else 8)
        return leaf

    def _spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise ExpressionError(
                f"the expression's value is larger than {MAX_RESULT_BYTES} bytes "
                "(max_expression_result_bytes)"
            )

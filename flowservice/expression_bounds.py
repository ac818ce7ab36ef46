"""What a compiled CEL expression may copy and iterate, read from its checked syntax tree.

The C++ CEL runtime bounds an evaluation's comprehension iterations (10,000),
not the memory it allocates, and its Python binding has no option to bound,
replace or turn off concatenation (an environment config that excludes the
overloads hides them from the checker only: `dyn + dyn` still concatenates
at run time; a replacement overload is refused as a duplicate). Every value
an evaluation builds stays in its arena until the evaluation ends, so:

* a concatenation (or `bytes()`/`string()` between strings and bytes) copies
  its operands: inside a comprehension it does so once per element
  (`input.l.map(x, input.s + input.s)`: 2 MiB per element of a 1 MiB
  string), and a chain `a + b + c + ...` keeps every partial result;
* `map` and `filter` append to their result list by copying it, so one over
  n elements holds about n * n / 2 element handles of 32 bytes (a `map` over
  10,000 elements: 1.6 GB).

The bounds, checked once at compile time on the tree the checker produced (a
`cel.expr.CheckedExpr`, which names the overloads each call may take):

* no copying call in a comprehension's range, condition or step;
* elsewhere, the copies an expression makes, each weighted by the data
  operands it copies, stay within `MAX_COPY_WEIGHT`;
* an expression that appends (uses `map` or `filter`) reports the data paths
  it reads (`Inspection.read_paths`), so that the evaluator can refuse data
  whose lists or maps are too long for it (see `flowservice.expressions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory

__all__ = ["MAX_COPY_WEIGHT", "CopyProblem", "Inspection", "inspect_expression"]

MAX_COPY_WEIGHT = 16
"""Copies of data one expression may make outside comprehensions, counted as the data
operands each concatenation or conversion copies (`a + b + c` weighs 2 + 3;
constants weigh nothing): the memory they take is at most this many times the
largest value read. Reported as `max_expression_copies`."""

COPYING_OVERLOADS = frozenset(
    {"add_string", "add_bytes", "add_list", "string_to_bytes", "bytes_to_string"}
)
"""The standard overloads whose result is a copy of their operands."""
_COPYING_NAMES = tuple(name.encode() for name in sorted(COPYING_OVERLOADS))


@dataclass(frozen=True, slots=True)
class CopyProblem:
    """A place where an expression would copy too much."""

    offset: int
    """0-based character offset of the call in the source."""
    reason: str
    """What is wrong and how to avoid it."""


@dataclass(frozen=True, slots=True)
class Inspection:
    """What `inspect_expression` found."""

    problems: tuple[CopyProblem, ...]
    """Why the expression must not run; empty when it may."""
    appends: bool
    """Whether it uses `map` or `filter`, whose cost grows with the square of their range."""
    read_paths: tuple[tuple[str, ...], ...]
    """The data it reads, as field paths from a variable (`("tasks", "fetch", "output")`);
    a bare variable or an index (`input[k]`) reads the whole variable."""


@dataclass(slots=True)
class _Node:
    """One `cel.expr.Expr`, with only what the checks read."""

    id: int = 0
    kind: str = ""
    name: str = ""
    """The identifier (ident), function (call), field (select) or accumulator
    variable (comprehension)."""
    children: list[_Node] = field(default_factory=list)
    """Operands evaluated once: a call's target and args, elements, entries, ..."""
    looped: list[_Node] = field(default_factory=list)
    """A comprehension's range, loop condition and step."""


def inspect_expression(serialized: bytes, variables: tuple[str, ...]) -> Inspection:
    """Inspects a checked expression, as `Expression.serialize()` gives it.

    `variables` are the names whose data paths `Inspection.read_paths` lists.
    """
    if not _may_copy(serialized):  # most expressions: no need to read the tree
        return Inspection((), appends=False, read_paths=())
    checked = _CHECKED_EXPR.FromString(any_pb2.Any.FromString(serialized).value)
    overloads = {entry.key: entry.value.overload_id for entry in checked.reference_map}
    positions = {entry.key: entry.value for entry in checked.source_info.positions}
    root = _node(checked.expr)
    checker = _Checker(overloads, positions, frozenset(variables))
    checker.visit(root, in_loop=False, accumulators=frozenset())
    if checker.weight > MAX_COPY_WEIGHT:
        checker.problems.append(
            CopyProblem(
                checker.first_copy,
                f"the expression copies data {checker.weight} times (concatenation or "
                "bytes/string conversion, counted per data operand), above the limit of "
                f"{MAX_COPY_WEIGHT} (max_expression_copies)",
            )
        )
    return Inspection(tuple(checker.problems), checker.appends, tuple(sorted(checker.paths)))


@dataclass
class _Checker:
    overloads: Mapping[int, Sequence[str]]
    """The overloads each call may take, by expression id."""
    positions: Mapping[int, int]
    variables: frozenset[str]
    weight: int = 0
    first_copy: int = 0
    appends: bool = False
    problems: list[CopyProblem] = field(default_factory=list)
    paths: set[tuple[str, ...]] = field(default_factory=set)

    def visit(self, node: _Node, *, in_loop: bool, accumulators: frozenset[str]) -> None:
        path = _read_path(node)
        if path is not None:
            if path[0] in self.variables:
                self.paths.add(path)
            return
        if node.kind == "comprehension":
            accumulators = accumulators | {node.name}
        elif node.kind == "call" and self._copies(node, accumulators):
            self._copy(node, in_loop)
        for child in node.children:
            self.visit(child, in_loop=in_loop, accumulators=accumulators)
        for child in node.looped:
            self.visit(child, in_loop=True, accumulators=accumulators)

    def _copies(self, node: _Node, accumulators: frozenset[str]) -> bool:
        if COPYING_OVERLOADS.isdisjoint(self.overloads.get(node.id, ())):
            return False
        first = node.children[0] if node.children else None
        if first is not None and first.kind == "ident" and first.name in accumulators:
            self.appends = True  # `@result + [x]`: map or filter appending to its result
            return False
        return True

    def _copy(self, node: _Node, in_loop: bool) -> None:
        offset = self.positions.get(node.id, 0)
        if in_loop:
            self.problems.append(
                CopyProblem(
                    offset,
                    "this may concatenate or convert strings, bytes or lists, which in "
                    "the range, condition or step of map/filter/all/exists/exists_one "
                    "copies data once per element; move it out of the macro, or make "
                    "the operands numbers (double(x) + 1.0)",
                )
            )
        else:
            self.first_copy = offset if not self.weight else self.first_copy
            self.weight += sum(_data_operands(arg) for arg in node.children)


def _may_copy(encoded: bytes) -> bool:
    """Whether encoded CEL data names a copying overload (a quick test on the bytes)."""
    return any(name in encoded for name in _COPYING_NAMES)


def _read_path(node: _Node) -> tuple[str, ...] | None:
    """`("input", "a", "b")` for `input.a.b` or `input`; None for anything else."""
    fields: list[str] = []
    while node.kind == "select":
        fields.append(node.name)
        node = node.children[0]
    if node.kind != "ident":
        return None
    return (node.name, *reversed(fields))


def _data_operands(node: _Node) -> int:
    """How many operands under `node` come from data rather than constants."""
    if node.kind == "const":
        return 0
    if node.kind == "call" and node.name == "_+_":
        return sum(_data_operands(child) for child in node.children)
    return 1


def _node(expr: Any) -> _Node:
    """The `_Node` tree of a `cel.expr.Expr` message."""
    kind = expr.WhichOneof("kind") or ""
    node = _Node(expr.id, kind)
    if kind == "ident":
        node.name = expr.ident.name
    elif kind == "select":
        node.name = expr.select.field
        node.children.append(_node(expr.select.operand))
    elif kind == "call":
        call = expr.call
        node.name = call.function
        if call.HasField("target"):
            node.children.append(_node(call.target))
        node.children.extend(_node(arg) for arg in call.args)
    elif kind == "list":
        node.children.extend(_node(element) for element in expr.list.elements)
    elif kind == "struct":
        for entry in expr.struct.entries:
            if entry.HasField("map_key"):
                node.children.append(_node(entry.map_key))
            node.children.append(_node(entry.value))
    elif kind == "comprehension":
        loop = expr.comprehension
        node.name = loop.accu_var
        node.children.extend((_node(loop.accu_init), _node(loop.result)))
        node.looped.extend(
            _node(part) for part in (loop.iter_range, loop.loop_condition, loop.loop_step)
        )
    return node


def _checked_expr_class() -> Any:
    """A message class for `cel.expr.CheckedExpr`, declaring only the fields read here.

    The field numbers are those of cel-spec's checked.proto and syntax.proto;
    the binding ships no Python classes for them, and parsing with the
    protobuf runtime is far faster than reading the wire format in Python.
    Maps are declared as the repeated key/value messages they are on the wire.
    """
    file = descriptor_pb2.FileDescriptorProto(
        name="flowservice/cel_checked_expr_subset.proto",
        package="flowservice.celsubset",
        syntax="proto3",
    )
    scalar = {"int64": _Field.TYPE_INT64, "int32": _Field.TYPE_INT32, "string": _Field.TYPE_STRING}
    for name, fields in _MESSAGES.items():
        message = file.message_type.add(name=name)
        if name == "Expr":
            message.oneof_decl.add(name="kind")
        for field_name, number, type_name, repeated in fields:
            declared = message.field.add(
                name=field_name,
                number=number,
                label=_Field.LABEL_REPEATED if repeated else _Field.LABEL_OPTIONAL,
            )
            if type_name in scalar:
                declared.type = scalar[type_name]
            else:
                declared.type = _Field.TYPE_MESSAGE
                declared.type_name = f".flowservice.celsubset.{type_name}"
            if name == "Expr" and number >= 3:
                declared.oneof_index = 0
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    descriptor = pool.FindMessageTypeByName("flowservice.celsubset.CheckedExpr")
    return message_factory.GetMessageClass(descriptor)


_Field = descriptor_pb2.FieldDescriptorProto
# message: (field, number, type, repeated)
_MESSAGES: dict[str, tuple[tuple[str, int, str, bool], ...]] = {
    "CheckedExpr": (
        ("reference_map", 2, "ReferenceEntry", True),
        ("expr", 4, "Expr", False),
        ("source_info", 5, "SourceInfo", False),
    ),
    "ReferenceEntry": (("key", 1, "int64", False), ("value", 2, "Reference", False)),
    "Reference": (("overload_id", 3, "string", True),),
    "SourceInfo": (("positions", 4, "PositionEntry", True),),
    "PositionEntry": (("key", 1, "int64", False), ("value", 2, "int32", False)),
    "Expr": (
        ("id", 2, "int64", False),
        ("const", 3, "Constant", False),
        ("ident", 4, "Ident", False),
        ("select", 5, "Select", False),
        ("call", 6, "Call", False),
        ("list", 7, "CreateList", False),
        ("struct", 8, "CreateStruct", False),
        ("comprehension", 9, "Comprehension", False),
    ),
    "Constant": (),
    "Ident": (("name", 1, "string", False),),
    "Select": (("operand", 1, "Expr", False), ("field", 2, "string", False)),
    "Call": (
        ("target", 1, "Expr", False),
        ("function", 2, "string", False),
        ("args", 3, "Expr", True),
    ),
    "CreateList": (("elements", 1, "Expr", True),),
    "CreateStruct": (("entries", 2, "Entry", True),),
    "Entry": (("map_key", 3, "Expr", False), ("value", 4, "Expr", False)),
    "Comprehension": (
        ("iter_range", 2, "Expr", False),
        ("accu_var", 3, "string", False),
        ("accu_init", 4, "Expr", False),
        ("loop_condition", 5, "Expr", False),
        ("loop_step", 6, "Expr", False),
        ("result", 7, "Expr", False),
    ),
}
_CHECKED_EXPR = _checked_expr_class()

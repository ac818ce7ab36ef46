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
`cel.expr.CheckedExpr`, which names the overloads each call may take, read
here straight from its wire format):

* no copying call in a comprehension's range, condition or step;
* elsewhere, the copies an expression makes, each weighted by the data
  operands it copies, stay within `MAX_COPY_WEIGHT`;
* an expression that appends (uses `map` or `filter`) reports the data paths
  it reads (`Inspection.read_paths`), so that the evaluator can refuse data
  whose lists or maps are too long for it (see `flowservice.expressions`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

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
    overloads: dict[int, set[str]] = {}
    positions: dict[int, int] = {}
    root = _Node()
    for number, value in _fields(_any_value(serialized)):
        if number == 2 and isinstance(value, bytes):  # reference_map entry
            key, reference = _map_entry(value)
            if isinstance(reference, bytes):
                overloads[key] = {
                    item.decode()
                    for n, item in _fields(reference)
                    if n == 3 and isinstance(item, bytes)
                }
        elif number == 4 and isinstance(value, bytes):
            root = _expr(value)
        elif number == 5 and isinstance(value, bytes):  # source_info
            for n, entry in _fields(value):
                if n == 4 and isinstance(entry, bytes):  # positions
                    key, offset = _map_entry(entry)
                    if isinstance(offset, int):
                        positions[key] = offset
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
    overloads: Mapping[int, set[str]]
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
        if not self.overloads.get(node.id, set()) & COPYING_OVERLOADS:
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


# Field numbers of cel-spec's syntax.proto (Expr and its parts).
_KINDS = {
    3: "const",
    4: "ident",
    5: "select",
    6: "call",
    7: "list",
    8: "struct",
    9: "comprehension",
}
_ONCE = {"select": {1}, "call": {1, 3}, "list": {1}, "comprehension": {4, 7}}
_LOOPED = {2, 5, 6}  # Comprehension.iter_range, loop_condition, loop_step


def _expr(data: bytes) -> _Node:
    node = _Node()
    for number, value in _fields(data):
        if number == 2 and isinstance(value, int):
            node.id = value
        elif number in _KINDS and isinstance(value, bytes):
            node.kind = _KINDS[number]
            _fill(node, value)
    return node


def _fill(node: _Node, data: bytes) -> None:
    once = _ONCE.get(node.kind, set())
    for number, value in _fields(data):
        if not isinstance(value, bytes):
            continue
        if node.kind == "struct" and number == 2:  # entries: map_key (3) and value (4)
            node.children.extend(
                _expr(part) for n, part in _fields(value) if n in (3, 4) and isinstance(part, bytes)
            )
        elif number in once:
            node.children.append(_expr(value))
        elif node.kind == "comprehension" and number in _LOOPED:
            node.looped.append(_expr(value))
        elif (node.kind, number) in (
            ("ident", 1),
            ("select", 2),
            ("call", 2),
            ("comprehension", 3),
        ):
            node.name = value.decode()


def _any_value(serialized: bytes) -> bytes:
    """The `value` of a `google.protobuf.Any`."""
    for number, value in _fields(serialized):
        if number == 2 and isinstance(value, bytes):
            return value
    return b""


def _map_entry(data: bytes) -> tuple[int, int | bytes]:
    key: int = 0
    value: int | bytes = b""
    for number, item in _fields(data):
        if number == 1 and isinstance(item, int):
            key = item
        elif number == 2:
            value = item
    return key, value


def _fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """(field number, value) pairs of a protobuf message: varints as ints, the rest as bytes."""
    position = 0
    while position < len(data):
        tag, position = _varint(data, position)
        number, wire_type = tag >> 3, tag & 7
        if wire_type == 0:
            value, position = _varint(data, position)
            yield number, value
        elif wire_type == 2:
            length, position = _varint(data, position)
            yield number, data[position : position + length]
            position += length
        elif wire_type in (1, 5):
            size = 8 if wire_type == 1 else 4
            yield number, data[position : position + size]
            position += size
        else:
            raise ValueError(f"unexpected wire type {wire_type} in a checked expression")


def _varint(data: bytes, position: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = data[position]
        position += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, position

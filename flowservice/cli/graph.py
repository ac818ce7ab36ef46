"""Drawing a flow: its routes as a graph, written as Mermaid or Graphviz DOT.

The edges follow the routing rules of `flow.proto`, as the engine's routing
module states them (and this module asks it):

* a condition's `target_task_success`, labelled with its test (`outcome ==
  success` or the CEL expression) and `true`; in a chain of conditions on one
  task, every link has such an edge, numbered in the order they are tested;
* the last link's `target_task_failure`, labelled with its test and `false`;
* for a task no condition names: `success` to the next task in the list (or
  `end` after the last), and `failure` to `end` (fail-fast);
* an empty target or `end` goes to the `end` node.

With the record of a run (`ExecutionPath`), the tasks that ran and the edges
taken are highlighted, failed runs in red, and an edge taken more than once
says how many times.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from flowmanager.v1 import flow_pb2, flow_service_pb2
from flowservice.cli.errors import CliError
from flowservice.engine.routing import chains_of, stops, taken_target, unrouted_targets
from flowservice.models import END

__all__ = [
    "END",
    "Edge",
    "ExecutionPath",
    "FlowGraph",
    "Node",
    "render_with_graphviz",
    "to_dot",
    "to_mermaid",
]

EdgeKey = tuple[str, int | str, bool]
"""Identifies an edge whatever its target: ("condition", index, test value),
("next", task, True) for an implicit success, ("stop", task, False) for an
implicit failure, or ("start", "", True)."""

_START_ID = "flow_start"
_END_ID = "flow_end"
_SAFE_ID = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
# Words Mermaid's flowchart grammar reserves; a node named like one breaks the chart.
_MERMAID_KEYWORDS = frozenset(
    {"end", "graph", "flowchart", "subgraph", "style", "class", "classdef", "click"}
    | {"linkstyle", "direction", "default", "call", "href"}
)
_MAX_LABEL = 48
_GRAPHVIZ_TIMEOUT = 60.0
"""Seconds `dot` may take; a flow of the largest allowed size draws in a few."""
_TAKEN = "#2b8a3e"
_TAKEN_FILL = "#d3f9d8"
_FAILED = "#c92a2a"
_FAILED_FILL = "#ffe3e3"
_DIMMED = "#adb5bd"


@dataclass(frozen=True, slots=True)
class Node:
    """A box in the drawing: a task, the start, the end, or a target no task has."""

    id: str
    """An identifier safe in Mermaid and DOT, unique in the graph."""
    label: str
    """What the box says."""
    kind: str
    """`task`, `start`, `end` or `missing` (a name that no task has)."""
    task: str = ""
    """The task's name, for a task or missing node."""


@dataclass(frozen=True, slots=True)
class Edge:
    """An arrow: one way the flow may go from one node to another."""

    source: str
    """The id of the node it leaves."""
    target: str
    """The id of the node it reaches."""
    label: str
    """What decides it, such as `outcome == success: true`."""
    key: EdgeKey
    """What the record of a run names it by."""
    dashed: bool = False
    """True for the ways a test fails or a task's failure stops the flow."""


@dataclass(frozen=True, slots=True)
class FlowGraph:
    """Every node and edge of a flow, in a stable order."""

    title: str
    """The flow's name, or its id."""
    nodes: tuple[Node, ...]
    """The start, the tasks in list order, missing targets, then the end."""
    edges: tuple[Edge, ...]
    """The start edge, then each task's edges in list order."""

    @classmethod
    def of(cls, flow: flow_pb2.Flow) -> FlowGraph:
        """The graph of `flow`, drawn as far as it goes even when the flow is invalid."""
        ids = _NodeIds()
        nodes = [Node(_START_ID, "start", "start")]
        for task in flow.tasks:
            label = task.name if not task.description else f"{task.name}\n{task.description}"
            nodes.append(Node(ids.of(task.name), _shorten(label), "task", task.name))
        known = {task.name for task in flow.tasks}
        missing: dict[str, Node] = {}

        def target(name: str) -> str:
            if stops(name):
                return _END_ID
            if name not in known and name not in missing:
                missing[name] = Node(
                    ids.of(name), f"{_shorten(name)}\n(no such task)", "missing", name
                )
            return ids.of(name)

        edges = [Edge(_START_ID, target(flow.start_task), "", ("start", "", True))]
        chains = chains_of(flow.conditions)
        names = [task.name for task in flow.tasks]
        for position, name in enumerate(names):
            source = ids.of(name)
            chain = chains.pop(name, [])
            if chain:
                edges.extend(_chain_edges(source, chain, target))
                continue
            on_success, on_failure = unrouted_targets(names, position)
            edges.append(Edge(source, target(on_success), "success", ("next", name, True)))
            edges.append(
                Edge(source, target(on_failure), "failure", ("stop", name, False), dashed=True)
            )
        for name, chain in chains.items():  # conditions on a task that does not exist
            edges.extend(_chain_edges(target(name), chain, target))
        nodes.extend(missing.values())
        if any(edge.target == _END_ID for edge in edges):
            nodes.append(Node(_END_ID, "end", "end"))
        return cls(flow.name or flow.id or "flow", tuple(nodes), tuple(edges))


@dataclass(frozen=True, slots=True)
class ExecutionPath:
    """What one run of the flow went through, to highlight in its graph."""

    tasks: frozenset[str]
    """The names of the tasks that ran."""
    failed: frozenset[str]
    """The names of the tasks with a failed run."""
    edges: Counter[EdgeKey] = field(default_factory=Counter)
    """How many times each edge was taken."""

    @classmethod
    def of(cls, flow: flow_pb2.Flow, run: flow_service_pb2.ExecuteResponse) -> ExecutionPath:
        """The path `run` took through `flow`: from each task run's decision, or its outcome."""
        names = [task.name for task in flow.tasks]
        results = list(run.task_results)
        ran = list(run.executed_tasks) or [result.task for result in results]
        edges: Counter[EdgeKey] = Counter()
        if ran:
            edges[("start", "", True)] += 1
        for position, result in enumerate(results):
            if result.HasField("decision"):
                decision = result.decision
                held = decision.branch == flow_service_pb2.BRANCH_SUCCESS
                edges[("condition", decision.condition_index, held)] += 1
                continue
            went_to = ran[position + 1] if position + 1 < len(ran) else END
            if result.outcome == flow_service_pb2.TASK_OUTCOME_SUCCESS:
                index = names.index(result.task) if result.task in names else -1
                following = names[index + 1] if 0 <= index < len(names) - 1 else END
                # A run stopped by the step limit or a deadline took no edge.
                if following == went_to:
                    edges[("next", result.task, True)] += 1
            elif went_to == END:
                edges[("stop", result.task, False)] += 1
        failed = {
            result.task
            for result in results
            if result.outcome == flow_service_pb2.TASK_OUTCOME_FAILURE
        }
        return cls(frozenset(ran), frozenset(failed), edges)


def to_mermaid(graph: FlowGraph, path: ExecutionPath | None = None) -> str:
    """The graph as a Mermaid flowchart, highlighting `path` when given."""
    lines = ["flowchart TD", f"    %% {_single_line(graph.title)}"]
    for node in graph.nodes:
        text = _mermaid_text(node.label)
        shape = {
            "start": f'(("{text}"))',
            "end": f'((("{text}")))',
            "missing": f'{{{{"{text}"}}}}',
        }.get(node.kind, f'["{text}"]')
        lines.append(f"    {node.id}{shape}")
    for edge in graph.edges:
        arrow = "-.->" if edge.dashed else "-->"
        label = _edge_label(edge, path)
        text = f'|"{_mermaid_text(label)}"|' if label else ""
        lines.append(f"    {edge.source} {arrow}{text} {edge.target}")
    missing = [node.id for node in graph.nodes if node.kind == "missing"]
    if missing:
        lines.append(f"    classDef missing stroke:{_FAILED},stroke-dasharray:4 4")
        lines.append(f"    class {','.join(missing)} missing")
    if path is not None:
        lines.extend(_mermaid_highlight(graph, path))
    return "\n".join(lines) + "\n"


def to_dot(graph: FlowGraph, path: ExecutionPath | None = None) -> str:
    """The graph in Graphviz DOT, highlighting `path` when given."""
    lines = [
        "digraph flow {",
        f"    label={_dot_string(graph.title)};",
        "    labelloc=t;",
        '    fontname="Helvetica";',
        "    rankdir=TB;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
    ]
    touched = _touched(graph, path) if path is not None else set()
    for node in graph.nodes:
        attributes = {"label": node.label}
        attributes.update(_dot_node_style(node, path, touched))
        lines.append(f"    {_dot_string(node.id)} [{_dot_attributes(attributes)}];")
    for edge in graph.edges:
        attributes = {"label": _edge_label(edge, path)} if edge.label else {}
        if edge.dashed:
            attributes["style"] = "dashed"
        if path is not None:
            taken = path.edges[edge.key] > 0
            attributes["color"] = _TAKEN if taken else _DIMMED
            if taken:
                attributes["penwidth"] = "2.5"
                attributes["fontcolor"] = _TAKEN
        body = f" [{_dot_attributes(attributes)}]" if attributes else ""
        lines.append(f"    {_dot_string(edge.source)} -> {_dot_string(edge.target)}{body};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render_with_graphviz(dot_text: str, image_format: str, target: str) -> bytes:
    """The drawing of `dot_text` as `image_format` (`svg`, `png`), by Graphviz's `dot`.

    `target` names where it will go, for messages. Raises `CliError` when
    Graphviz is not installed or fails.
    """
    dot = shutil.which("dot")
    if dot is None:
        raise CliError(
            f"cannot write {target} as {image_format.upper()}: Graphviz's `dot` is not installed "
            "(Debian/Ubuntu: `apt-get install graphviz`, macOS: `brew install graphviz`); "
            "--format dot or --format mermaid need nothing"
        )
    try:
        completed = subprocess.run(
            [dot, f"-T{image_format}"],
            input=dot_text.encode(),
            capture_output=True,
            timeout=_GRAPHVIZ_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CliError(f"Graphviz took more than {_GRAPHVIZ_TIMEOUT:g} s; gave up") from None
    if completed.returncode != 0:
        message = completed.stderr.decode(errors="replace").strip()
        raise CliError(f"Graphviz failed (exit {completed.returncode}): {message}")
    return completed.stdout


class _NodeIds:
    """Gives each name one id that Mermaid and DOT both take as is."""

    def __init__(self) -> None:
        self._ids: dict[str, str] = {}
        self._used = {_START_ID, _END_ID}

    def of(self, name: str) -> str:
        if name not in self._ids:
            safe = _SAFE_ID.fullmatch(name) and name.lower() not in _MERMAID_KEYWORDS
            base = name if safe else f"task_{len(self._ids) + 1}"
            candidate, suffix = base, 1
            while candidate in self._used:
                suffix += 1
                candidate = f"{base}_{suffix}"
            self._used.add(candidate)
            self._ids[name] = candidate
        return self._ids[name]


def _chain_edges(
    source: str, chain: list[tuple[int, flow_pb2.Condition]], target: Callable[[str], str]
) -> Iterator[Edge]:
    numbered = len(chain) > 1
    for link, (index, condition) in enumerate(chain, start=1):
        test = _test(condition)
        prefix = f"{link}. " if numbered else ""
        yield Edge(
            source,
            target(taken_target(condition, held=True)),
            f"{prefix}{test}: true",
            ("condition", index, True),
        )
        if link == len(chain):
            yield Edge(
                source,
                target(taken_target(condition, held=False)),
                f"{prefix}{test}: false",
                ("condition", index, False),
                dashed=True,
            )


def _test(condition: flow_pb2.Condition) -> str:
    if condition.WhichOneof("test") == "expression":
        return _shorten(_single_line(condition.expression))
    return f"outcome == {condition.outcome or '?'}"


def _edge_label(edge: Edge, path: ExecutionPath | None) -> str:
    times = path.edges[edge.key] if path is not None else 0
    return f"{edge.label} ({times} times)" if times > 1 else edge.label


def _mermaid_highlight(graph: FlowGraph, path: ExecutionPath) -> Iterator[str]:
    yield f"    classDef taken fill:{_TAKEN_FILL},stroke:{_TAKEN},stroke-width:2px"
    yield f"    classDef failed fill:{_FAILED_FILL},stroke:{_FAILED},stroke-width:2px"
    taken = [index for index, edge in enumerate(graph.edges) if path.edges[edge.key] > 0]
    touched = _touched(graph, path)
    ran = [
        node.id
        for node in graph.nodes
        if (node.task in path.tasks and node.task not in path.failed)
        or (node.kind in ("start", "end") and node.id in touched)
    ]
    failed = [node.id for node in graph.nodes if node.task in path.failed]
    if ran:
        yield f"    class {','.join(ran)} taken"
    if failed:
        yield f"    class {','.join(failed)} failed"
    yield f"    linkStyle default stroke:{_DIMMED}"
    if taken:
        yield f"    linkStyle {','.join(map(str, taken))} stroke:{_TAKEN},stroke-width:3px"


def _touched(graph: FlowGraph, path: ExecutionPath) -> set[str]:
    """The ids of the nodes a taken edge leaves or reaches: the start and end circles light up."""
    touched: set[str] = set()
    for edge in graph.edges:
        if path.edges[edge.key] > 0:
            touched.update((edge.source, edge.target))
    return touched


def _dot_node_style(node: Node, path: ExecutionPath | None, touched: set[str]) -> dict[str, str]:
    style: dict[str, str] = {}
    if node.kind == "start":
        style = {"shape": "circle"}
    elif node.kind == "end":
        style = {"shape": "doublecircle"}
    elif node.kind == "missing":
        style = {"style": "dashed", "color": _FAILED}
    if path is not None and node.task:
        if node.task in path.failed:
            style.update(style="rounded,filled", fillcolor=_FAILED_FILL, color=_FAILED)
        elif node.task in path.tasks:
            style.update(style="rounded,filled", fillcolor=_TAKEN_FILL, color=_TAKEN)
    elif node.id in touched:
        style.update(style="filled", fillcolor=_TAKEN_FILL, color=_TAKEN)
    return style


def _mermaid_text(text: str) -> str:
    """`text` inside a quoted Mermaid label: entity codes for what the grammar or HTML reads."""
    escaped = "".join(f"#{ord(char)};" if char in '"#&<>|' else char for char in text)
    return escaped.replace("\n", "<br/>")


def _dot_string(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


def _dot_attributes(attributes: dict[str, str]) -> str:
    return ", ".join(f"{name}={_dot_string(value)}" for name, value in attributes.items())


def _shorten(text: str) -> str:
    return "\n".join(
        line if len(line) <= _MAX_LABEL else line[: _MAX_LABEL - 1] + "…"
        for line in text.split("\n")
    )


def _single_line(text: str) -> str:
    return " ".join(text.split())

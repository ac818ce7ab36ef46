// A flow drawn as a graph: the same nodes and edges as flowctl's `graph`
// command (flowservice/cli/graph.py), laid out by ELK and drawn as SVG.
//
// Edges follow the routing rules of flow.proto:
// * a condition's `target_task_success`, labelled with its test and `true`
//   (numbered when several conditions on one task form a chain);
// * the last link's `target_task_failure`, labelled with its test and `false`;
// * for a task no condition names: `success` to the next task in the list
//   (or `end` after the last) and `failure` to `end` (fail-fast);
// * an empty target or `end` goes to the `end` terminal.
//
// Every node and edge carries data attributes (data-kind, data-task,
// data-state, data-taken, data-issues, ...) that CSS styles and tests read.

import ELK from "elkjs/lib/elk.bundled.js";
import type { ElkExtendedEdge, ElkNode } from "elkjs/lib/elk-api";
import { s } from "./dom";
import type { Flow } from "./gen/flowmanager/v1/flow_pb";

export const END = "end";

export type NodeKind = "start" | "task" | "end" | "missing";

export interface GraphNode {
  id: string;
  kind: NodeKind;
  /** The task's name, for task and missing nodes. */
  task: string;
  /** The second line: the task's description or type. */
  detail: string;
}

export interface GraphEdge {
  /** What a run names the edge by: `start`, `condition:<index>:<held>`, `next:<task>`, `stop:<task>`. */
  key: string;
  source: string;
  target: string;
  label: string;
  /** `start`, `condition`, `next` or `stop`. */
  kind: string;
  /** `success` for the way a test holds (or a task succeeds), `failure` otherwise. */
  branch: "success" | "failure";
  /** The condition's index in `Flow.conditions`, or -1. */
  condition: number;
}

export interface FlowGraph {
  nodes: GraphNode[];
  edges: GraphEdge[];
}

const START_ID = "start";
const END_ID = "end";
const taskId = (name: string) => `task:${name}`;
const stops = (target: string) => target === "" || target === END;

function testOf(condition: Flow["conditions"][number]): string {
  if (condition.test.case === "expression") return condition.test.value;
  return `outcome == ${condition.test.case === "outcome" ? condition.test.value || "?" : "?"}`;
}

/** The graph of `flow`, drawn as far as it goes even when the flow is invalid. */
export function flowGraph(flow: Flow): FlowGraph {
  const nodes: GraphNode[] = [{ id: START_ID, kind: "start", task: "", detail: "" }];
  const known = new Set(flow.tasks.map((task) => task.name));
  for (const task of flow.tasks) {
    nodes.push({ id: taskId(task.name), kind: "task", task: task.name, detail: task.description || task.type });
  }
  const missing = new Map<string, GraphNode>();
  const target = (name: string): string => {
    if (stops(name)) return END_ID;
    if (!known.has(name) && !missing.has(name)) {
      missing.set(name, { id: taskId(name), kind: "missing", task: name, detail: "no such task" });
    }
    return taskId(name);
  };
  const edges: GraphEdge[] = [
    { key: "start", source: START_ID, target: target(flow.startTask), label: "", kind: "start", branch: "success", condition: -1 },
  ];
  const chains = new Map<string, number[]>();
  flow.conditions.forEach((condition, index) => {
    chains.set(condition.sourceTask, [...(chains.get(condition.sourceTask) ?? []), index]);
  });
  const chainEdges = (source: string, chain: number[]) => {
    chain.forEach((index, link) => {
      const condition = flow.conditions[index]!;
      const prefix = chain.length > 1 ? `${link + 1}. ` : "";
      const test = testOf(condition);
      edges.push({ key: `condition:${index}:true`, source, target: target(condition.targetTaskSuccess), label: `${prefix}${test}: true`, kind: "condition", branch: "success", condition: index });
      if (link === chain.length - 1) {
        edges.push({ key: `condition:${index}:false`, source, target: target(condition.targetTaskFailure), label: `${prefix}${test}: false`, kind: "condition", branch: "failure", condition: index });
      }
    });
  };
  flow.tasks.forEach((task, position) => {
    const chain = chains.get(task.name);
    chains.delete(task.name);
    if (chain) return chainEdges(taskId(task.name), chain);
    const next = flow.tasks[position + 1]?.name ?? END;
    edges.push({ key: `next:${task.name}`, source: taskId(task.name), target: target(next), label: "success", kind: "next", branch: "success", condition: -1 });
    edges.push({ key: `stop:${task.name}`, source: taskId(task.name), target: END_ID, label: "failure", kind: "stop", branch: "failure", condition: -1 });
  });
  for (const [name, chain] of chains) chainEdges(target(name), chain); // conditions on a task that does not exist
  nodes.push(...missing.values());
  if (edges.some((edge) => edge.target === END_ID)) nodes.push({ id: END_ID, kind: "end", task: "", detail: "" });
  return { nodes, edges };
}

// ---------------------------------------------------------------------------
// Layout and drawing.

const elk = new ELK();
const FONT = "14px system-ui, sans-serif";
const SMALL_FONT = "12px system-ui, sans-serif";
const context = document.createElement("canvas").getContext("2d");

function textWidth(text: string, font: string): number {
  if (!context) return text.length * 8;
  context.font = font;
  return context.measureText(text).width;
}

const shorten = (text: string, most = 40) => (text.length > most ? `${text.slice(0, most - 1)}…` : text);

function nodeSize(node: GraphNode): { width: number; height: number } {
  if (node.kind === "start" || node.kind === "end") return { width: 44, height: 44 };
  const width = Math.max(textWidth(node.task, `bold ${FONT}`), textWidth(shorten(node.detail), SMALL_FONT), 90);
  return { width: Math.ceil(width) + 28, height: 58 };
}

/** Where ELK put everything. */
export interface Layout {
  graph: FlowGraph;
  root: ElkNode;
}

/** Lays `graph` out top to bottom. */
export async function layOut(graph: FlowGraph): Promise<Layout> {
  const root: ElkNode = {
    id: "root",
    layoutOptions: {
      "elk.algorithm": "layered",
      "elk.direction": "DOWN",
      "elk.edgeRouting": "ORTHOGONAL",
      "elk.layered.spacing.nodeNodeBetweenLayers": "56",
      "elk.spacing.nodeNode": "36",
      "elk.spacing.edgeLabel": "4",
      "elk.edgeLabels.placement": "CENTER",
      // Loops are common (poll, wait, poll again): break cycles so that the
      // flow reads top-down from the start, in the order the tasks are listed.
      "elk.layered.cycleBreaking.strategy": "DEPTH_FIRST",
      "elk.layered.considerModelOrder.strategy": "NODES_AND_EDGES",
      "elk.padding": "[top=12,left=12,bottom=12,right=12]",
    },
    children: graph.nodes.map((node) => ({ id: node.id, ...nodeSize(node) })),
    edges: graph.edges.map((edge, index) => ({
      id: `e${index}`,
      sources: [edge.source],
      targets: [edge.target],
      // Measured in bold: a taken edge's label is drawn bold.
      labels: edge.label
        ? [{ id: `l${index}`, text: shorten(edge.label, 48), width: textWidth(shorten(edge.label, 48), `bold ${SMALL_FONT}`) + 8, height: 16 }]
        : [],
    })),
  };
  return { graph, root: await elk.layout(root) };
}

function edgePath(edge: ElkExtendedEdge): string {
  return (edge.sections ?? [])
    .map((section) => {
      const points = [section.startPoint, ...(section.bendPoints ?? []), section.endPoint];
      return points.map((point, index) => `${index ? "L" : "M"}${point.x},${point.y}`).join(" ");
    })
    .join(" ");
}

function drawNode(node: GraphNode, box: ElkNode): SVGGElement {
  const { x = 0, y = 0, width = 0, height = 0 } = box;
  const isTask = node.kind === "task" || node.kind === "missing";
  const group = s("g", {
    class: "node",
    "data-kind": node.kind,
    "data-task": node.task || undefined,
    "data-state": isTask ? "idle" : undefined,
    transform: `translate(${x},${y})`,
    tabindex: isTask ? 0 : undefined,
    role: isTask ? "button" : "img",
    "aria-label": isTask ? `task ${node.task}` : node.kind,
  });
  if (!isTask) {
    group.append(s("circle", { cx: width / 2, cy: height / 2, r: width / 2 - 2 }));
    if (node.kind === "end") group.append(s("circle", { cx: width / 2, cy: height / 2, r: width / 2 - 6 }));
    group.append(s("text", { x: width / 2, y: height / 2 + 4, "text-anchor": "middle", class: "terminal-label" }, node.kind));
    return group;
  }
  group.append(
    s("rect", { width, height, rx: 8 }),
    s("text", { x: 14, y: 22, class: "node-name" }, node.task),
    s("text", { x: 14, y: 40, class: "node-detail" }, shorten(node.detail)),
    s("text", { x: 14, y: 53, class: "node-note" }),
    s("title", {}, node.detail ? `${node.task}: ${node.detail}` : node.task),
  );
  return group;
}

function drawEdge(edge: GraphEdge, laid: ElkExtendedEdge, kinds: Map<string, NodeKind>): SVGGElement {
  const group = s("g", {
    class: "edge",
    "data-key": edge.key,
    "data-kind": edge.kind,
    "data-branch": edge.branch,
    "data-source-kind": kinds.get(edge.source),
    "data-target-kind": kinds.get(edge.target),
    "data-taken": "false",
  });
  group.append(s("path", { d: edgePath(laid) }));
  const label = laid.labels?.[0];
  if (label && edge.label) {
    const { x = 0, y = 0, width = 0, height = 0 } = label;
    group.append(
      s("rect", { class: "edge-label-bg", x, y, width, height, rx: 3 }),
      s("text", { class: "edge-label", x: x + 4, y: y + height - 4 }, label.text ?? ""),
      s("title", {}, edge.label),
    );
  }
  return group;
}

/** The SVG drawing of a laid-out graph. */
export function draw(layout: Layout): SVGSVGElement {
  const { graph, root } = layout;
  const width = root.width ?? 0;
  const height = root.height ?? 0;
  const svg = s("svg", {
    class: "flow-graph",
    viewBox: `0 0 ${width} ${height}`,
    width,
    role: "group",
    "aria-label": "flow graph",
  });
  // Scaled to its pane, but never below 3/4 of its size: a wide flow scrolls rather than shrinks.
  svg.style.maxWidth = `${width}px`;
  svg.style.minWidth = `${Math.min(width, Math.round(width * 0.75))}px`;
  // One arrowhead per colour an edge can have; style.css picks one by the edge's state.
  const marker = (id: string) =>
    s("marker", { id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 9, markerHeight: 9, markerUnits: "userSpaceOnUse", orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10 z" }));
  svg.append(s("defs", {}, marker("arrow"), marker("arrow-dim"), marker("arrow-ok"), marker("arrow-bad"), marker("arrow-warn")));
  const kinds = new Map(graph.nodes.map((node) => [node.id, node.kind]));
  const edgeLayer = s("g", { class: "edges" });
  graph.edges.forEach((edge, index) => {
    const laid = root.edges?.[index];
    if (laid) edgeLayer.append(drawEdge(edge, laid, kinds));
  });
  const nodeLayer = s("g", { class: "nodes" });
  for (const node of graph.nodes) {
    const box = root.children?.find((child) => child.id === node.id);
    if (box) nodeLayer.append(drawNode(node, box));
  }
  svg.append(edgeLayer, nodeLayer);
  return svg;
}

/** Lays out and draws `flow`. */
export async function drawFlow(flow: Flow): Promise<SVGSVGElement> {
  return draw(await layOut(flowGraph(flow)));
}

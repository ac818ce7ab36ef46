// Validate's errors and warnings, pinned on the nodes and edges of the graph
// that their field paths concern (`flow.tasks[1].type` on task 1's node,
// `flow.conditions[0].target_task_failure` on condition 0's failure edge).

import { s } from "./dom";
import type { Flow } from "./gen/flowmanager/v1/flow_pb";
import type { ValidateResponse, ValidationIssue } from "./gen/flowmanager/v1/flow_service_pb";

export type Severity = "error" | "warning";

/** The CSS selector of the graph element a field path concerns, or "" for the flow as a whole. */
export function targetOf(field: string, flow: Flow): string {
  const task = /^flow\.tasks\[(\d+)\]/.exec(field);
  if (task) {
    const name = flow.tasks[Number(task[1])]?.name;
    return name === undefined ? "" : `.node[data-task="${CSS.escape(name)}"]`;
  }
  const condition = /^flow\.conditions\[(\d+)\](\.target_task_failure)?/.exec(field);
  if (condition) return `.edge[data-key="condition:${condition[1]}:${condition[2] ? "false" : "true"}"]`;
  if (field.startsWith("flow.start_task")) return `.edge[data-key="start"]`;
  const stub = /^stubs\["(.*)"\]/.exec(field);
  if (stub) return `.node[data-task="${CSS.escape(stub[1] ?? "")}"]`;
  return "";
}

function pin(element: SVGGElement, issue: ValidationIssue, severity: Severity): void {
  if (element.dataset.issues !== "error") element.dataset.issues = severity;
  // The issue list's buttons move the focus here; task nodes are focusable already.
  if (!element.hasAttribute("tabindex")) element.setAttribute("tabindex", "-1");
  const text = `${severity}: ${issue.reason}: ${issue.description}`;
  const title = element.querySelector(":scope > title.issues-title") ?? element.appendChild(s("title", { class: "issues-title" }));
  title.textContent = title.textContent ? `${title.textContent}\n${text}` : text;
  const count = Number(element.dataset.issueCount ?? "0") + 1;
  element.dataset.issueCount = String(count);
  if (element.classList.contains("node")) {
    const rect = element.querySelector("rect");
    const x = Number(rect?.getAttribute("width") ?? 0);
    element.querySelector(".issue-badge")?.remove();
    element.append(
      s("g", { class: "issue-badge", transform: `translate(${x - 4},4)` }, s("circle", { r: 10 }), s("text", { y: 4, "text-anchor": "middle" }, String(count))),
    );
  }
}

/** Pins every issue of `response` on `svg`; returns the pinned element of each, in order. */
export function pinIssues(svg: SVGSVGElement, flow: Flow, response: ValidateResponse): Array<Element | null> {
  const pinned: Array<Element | null> = [];
  const each = (issues: ValidationIssue[], severity: Severity) => {
    for (const issue of issues) {
      const selector = targetOf(issue.field, flow);
      const element = selector ? svg.querySelector<SVGGElement>(selector) : null;
      if (element) pin(element, issue, severity);
      pinned.push(element);
    }
  };
  each(response.errors, "error");
  each(response.warnings, "warning");
  return pinned;
}

// Flows: paste, type or open a flow (JSON or YAML), see it drawn, and see
// Validate's errors and warnings pinned where they apply.

import { toJson } from "@bufbuild/protobuf";
import { describeError, flowService } from "../api";
import { fill, h } from "../dom";
import { EXAMPLES, currentText, fieldReference, parseDocument, setText } from "../flowdoc";
import { ValidateRequestSchema, type ValidateResponse } from "../gen/flowmanager/v1/flow_service_pb";
import { TaskSchema, type Flow } from "../gen/flowmanager/v1/flow_pb";
import { drawFlow } from "../graph";
import { pinIssues } from "../issues";
import type { Page } from "./page";
import { create } from "@bufbuild/protobuf";

const REDRAW_AFTER_MS = 400;

function referencePanel(): HTMLElement {
  return h(
    "details",
    { class: "reference" },
    h("summary", {}, "Field names (from the proto)"),
    ...fieldReference().map(({ message, fields }) =>
      h("div", {}, h("h4", {}, message), h("ul", {}, ...fields.map((field) => h("li", {}, h("code", {}, field.name), ` ${field.type}`)))),
    ),
  );
}

/** Shows a task's definition when its node is clicked or Enter is pressed on it. */
function wireNodes(svg: SVGSVGElement, flow: Flow, details: HTMLElement): void {
  const show = (name: string) => {
    const task = flow.tasks.find((t) => t.name === name);
    if (task) fill(details, h("h3", {}, `Task ${name}`), h("pre", {}, JSON.stringify(toJson(TaskSchema, task), null, 2)));
  };
  for (const node of svg.querySelectorAll<SVGGElement>(".node[data-task]")) {
    const name = node.dataset.task ?? "";
    node.addEventListener("click", () => show(name));
    node.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        show(name);
      }
    });
  }
}

function issueList(response: ValidateResponse, pinned: Array<Element | null>): HTMLElement {
  const rows = [
    ...response.errors.map((issue) => ({ issue, severity: "error" })),
    ...response.warnings.map((issue) => ({ issue, severity: "warning" })),
  ];
  return h(
    "div",
    { class: "issues", "data-valid": String(response.valid), "data-errors": response.errors.length, "data-warnings": response.warnings.length },
    h("p", { class: response.valid ? "ok" : "error" }, response.valid ? `Valid${rows.length ? `, ${rows.length} warning(s)` : ""}.` : `${response.errors.length} error(s), ${response.warnings.length} warning(s).`),
    rows.length
      ? h(
          "ul",
          {},
          ...rows.map(({ issue, severity }, index) => {
            const element = pinned[index] as SVGGElement | null;
            return h(
              "li",
              { "data-severity": severity, "data-reason": issue.reason, "data-field": issue.field },
              h("span", { class: `severity ${severity}` }, severity),
              " ",
              element
                ? h("button", { class: "link", type: "button", onclick: () => element.focus() }, h("code", {}, issue.field || "flow"))
                : h("code", {}, issue.field || "flow"),
              ` ${issue.reason}: ${issue.description}`,
            );
          }),
        )
      : null,
  );
}

export function flowsPage(): Page {
  const editor = h("textarea", { id: "flow-editor", class: "editor", spellcheck: "false", "aria-label": "Flow (JSON or YAML)", placeholder: "Paste a flow here (JSON or YAML), or open a file or an example." });
  editor.value = currentText();
  const graph = h("div", { class: "graph", id: "flow-graph" });
  const issues = h("div", { class: "issues-pane", "aria-live": "polite" });
  const details = h("div", { class: "node-details" });
  const file = h("input", { type: "file", accept: ".json,.yaml,.yml,application/json", hidden: true, id: "flow-file" });
  const examples = h("select", { id: "flow-example", "aria-label": "Load an example" }, h("option", { value: "" }, "Load an example…"), ...EXAMPLES.map((example) => h("option", { value: example.name }, example.name)));
  let timer = 0;
  let generation = 0;

  async function refresh(validate: boolean): Promise<void> {
    const mine = ++generation;
    setText(editor.value);
    const parsed = parseDocument(editor.value);
    if (!parsed.ok) {
      graph.dataset.state = "invalid-document";
      fill(graph, h("p", { class: "error", role: "alert" }, parsed.error));
      fill(issues);
      return;
    }
    const flow = parsed.request.flow;
    if (!flow) return;
    const svg = await drawFlow(flow);
    if (mine !== generation) return;
    graph.dataset.state = "drawn";
    fill(graph, svg);
    fill(details);
    wireNodes(svg, flow, details);
    if (!validate) return;
    try {
      const response = await flowService.validate(create(ValidateRequestSchema, { flow, input: parsed.request.input, stubs: parsed.request.stubs }));
      if (mine !== generation) return;
      fill(issues, issueList(response, pinIssues(svg, flow, response)));
    } catch (error) {
      fill(issues, h("p", { class: "error", role: "alert" }, `Validate failed: ${describeError(error)}`));
    }
  }

  /** Keeps each edit at once (the Run page reads it) and redraws once typing pauses. */
  const later = () => {
    setText(editor.value);
    graph.dataset.state = "pending";
    fill(issues);
    window.clearTimeout(timer);
    timer = window.setTimeout(() => void refresh(true), REDRAW_AFTER_MS);
  };
  const load = (text: string) => {
    editor.value = text;
    void refresh(true);
  };
  editor.addEventListener("input", later);
  editor.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      void refresh(true);
    }
  });
  file.addEventListener("change", async () => {
    const chosen = file.files?.[0];
    if (chosen) load(await chosen.text());
  });
  examples.addEventListener("change", () => {
    const example = EXAMPLES.find((e) => e.name === examples.value);
    if (example) load(example.text);
  });

  const element = h(
    "section",
    { class: "page flows-page", "aria-labelledby": "flows-title" },
    h(
      "div",
      { class: "pane editor-pane" },
      h("h1", { id: "flows-title" }, "Flow"),
      h(
        "div",
        { class: "toolbar" },
        examples,
        h("button", { type: "button", onclick: () => file.click() }, "Open file…"),
        file,
        h("button", { type: "button", id: "validate", onclick: () => void refresh(true) }, "Validate"),
        h("a", { href: "/run", "data-link": true, class: "button primary", id: "to-run" }, "Run…"),
      ),
      editor,
      h("p", { class: "hint" }, "Ctrl+Enter validates; Tab leaves the editor."),
      referencePanel(),
    ),
    h("div", { class: "pane graph-pane" }, h("h2", {}, "Graph"), graph, issues, details),
  );
  void refresh(true);
  return { element, title: "Flows", dispose: () => window.clearTimeout(timer) };
}

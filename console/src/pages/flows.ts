// Flows: paste, type or open a flow (JSON or YAML), or pick a version from
// the registry; see it drawn, and see Validate's errors and warnings pinned
// where they apply; save it to the registry as a new version.

import { create, toJson } from "@bufbuild/protobuf";
import { describeError, fieldViolations, flowService, registryService } from "../api";
import { fill, h } from "../dom";
import { EXAMPLES, currentText, fieldReference, parseDocument, setText } from "../flowdoc";
import { ValidateRequestSchema, ValidateResponseSchema, type ValidateResponse } from "../gen/flowmanager/v1/flow_service_pb";
import { TaskSchema, type Flow } from "../gen/flowmanager/v1/flow_pb";
import { drawFlow } from "../graph";
import { pinIssues } from "../issues";
import { clearOrigin, documentOf, formatRef, originOf, setOrigin, type FlowRef } from "../origin";
import { registryPicker } from "../picker";
import type { Page } from "./page";

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

/** Loads a file or an example into the editor. */
function sources(load: (text: string) => void): HTMLElement[] {
  const file = h("input", { type: "file", accept: ".json,.yaml,.yml,application/json", hidden: true, id: "flow-file" });
  file.addEventListener("change", async () => {
    const chosen = file.files?.[0];
    if (chosen) load(await chosen.text());
  });
  const examples = h("select", { id: "flow-example", "aria-label": "Load an example" }, h("option", { value: "" }, "Load an example…"), ...EXAMPLES.map((example) => h("option", { value: example.name }, example.name)));
  examples.addEventListener("change", () => {
    const example = EXAMPLES.find((e) => e.name === examples.value);
    if (example) load(example.text);
  });
  return [examples, h("button", { type: "button", onclick: () => file.click() }, "Open file…"), file];
}

/** The line that says which registry version the editor holds, if any. */
function originLine(flow: Flow | undefined): HTMLElement {
  const origin = originOf(flow);
  if (!origin) return h("p", { id: "flow-origin", class: "muted", "data-ref": "" }, "Not from the registry.");
  const ref = formatRef(origin);
  return h(
    "p",
    { id: "flow-origin", "data-ref": ref, "data-modified": String(origin.modified) },
    h("code", {}, ref),
    origin.modified ? ", modified: Save to registry makes a new version" : " from the registry: Run runs it by reference",
  );
}

/** The outcome of CreateFlow, in a line: created, unchanged, or why it failed. */
function saveLine(outcome: string, text: string, version = 0): HTMLElement {
  return h("p", { id: "save-result", class: outcome === "invalid" || outcome === "error" ? "error" : "ok", role: "status", "data-outcome": outcome, "data-version": version || undefined }, text);
}

class FlowsPage implements Page {
  readonly title = "Flows";
  readonly element: HTMLElement;
  private readonly editor = h("textarea", { id: "flow-editor", class: "editor", spellcheck: "false", "aria-label": "Flow (JSON or YAML)", placeholder: "Paste a flow here (JSON or YAML), or open a file or an example." });
  private readonly graph = h("div", { class: "graph", id: "flow-graph" });
  private readonly issues = h("div", { class: "issues-pane", "aria-live": "polite" });
  private readonly details = h("div", { class: "node-details" });
  private readonly origin = h("div");
  private readonly saved = h("div", { "aria-live": "polite" });
  private timer = 0;
  /** Counts refreshes, so that a slow one does not overwrite a newer one. */
  private generation = 0;

  constructor() {
    this.editor.value = currentText();
    this.editor.addEventListener("input", () => this.edited());
    this.editor.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        void this.refresh();
      }
    });
    const load = (text: string) => {
      clearOrigin();
      this.editor.value = text;
      void this.refresh();
    };
    this.element = h(
      "section",
      { class: "page flows-page", "aria-labelledby": "flows-title" },
      h(
        "div",
        { class: "pane editor-pane" },
        h("h1", { id: "flows-title" }, "Flow"),
        h(
          "div",
          { class: "toolbar" },
          ...sources(load),
          h("button", { type: "button", id: "validate", onclick: () => void this.refresh() }, "Validate"),
          h("button", { type: "button", id: "save-flow", onclick: () => void this.save() }, "Save to registry"),
          h("a", { href: "/run", "data-link": true, class: "button primary", id: "to-run" }, "Run…"),
        ),
        registryPicker((ref) => void this.loadVersion(ref)),
        this.origin,
        this.saved,
        this.editor,
        h("p", { class: "hint" }, "Ctrl+Enter validates; Tab leaves the editor."),
        referencePanel(),
      ),
      h("div", { class: "pane graph-pane" }, h("h2", {}, "Graph"), this.graph, this.issues, this.details),
    );
    const query = new URLSearchParams(window.location.search);
    const flowId = query.get("flow");
    if (flowId) void this.loadVersion({ flowId, version: Number(query.get("version")) || 0 });
    else void this.refresh();
  }

  /**
   * Loads a version of the registry into the editor (GetFlow; version 0 is the
   * latest). A link from an execution's page names one in the query string,
   * which is then dropped, so that reloading the page keeps the edits.
   */
  private async loadVersion(ref: FlowRef): Promise<void> {
    if (window.location.search) window.history.replaceState(null, "", "/flows");
    fill(this.saved);
    try {
      const found = (await registryService.getFlow({ flowId: ref.flowId, version: ref.version })).flow;
      if (!found?.flow) throw new Error(`the registry returned no body for ${formatRef(ref)}`);
      this.editor.value = documentOf(found.flow);
      setOrigin({ flowId: found.flowId, version: found.version }, found.flow);
    } catch (error) {
      fill(this.saved, saveLine("error", `Loading ${ref.flowId} failed: ${describeError(error)}`));
    }
    await this.refresh();
  }

  /**
   * Stores the editor's flow in the registry (CreateFlow): a new version, or
   * the latest one when the body is the same. An invalid flow's violations are
   * pinned on the graph as Validate's errors are.
   */
  private async save(): Promise<void> {
    const parsed = parseDocument(this.editor.value);
    if (!parsed.ok || !parsed.request.flow) {
      fill(this.saved, saveLine("error", parsed.ok ? "The document has no flow." : parsed.error));
      return;
    }
    const flow = parsed.request.flow;
    window.clearTimeout(this.timer); // a redraw pending since the last edit would unpin the errors
    const mine = ++this.generation;
    fill(this.saved, saveLine("saving", "Saving…"));
    try {
      const response = await registryService.createFlow({ flow });
      const version = response.flow;
      if (!version) throw new Error("CreateFlow returned no version");
      const ref = { flowId: version.flowId, version: version.version };
      setOrigin(ref, flow);
      fill(this.saved, response.created ? saveLine("created", `Saved as ${formatRef(ref)}.`, ref.version) : saveLine("unchanged", `Unchanged, version ${ref.version} (${formatRef(ref)}): the latest version has this body.`, ref.version));
      fill(this.origin, originLine(flow));
    } catch (error) {
      const issues = fieldViolations(error);
      if (!issues.length) {
        fill(this.saved, saveLine("error", `Save failed: ${describeError(error)}`));
        return;
      }
      fill(this.saved, saveLine("invalid", `Not saved: ${issues.length} error(s), pinned on the graph.`));
      const response = create(ValidateResponseSchema, { valid: false, errors: issues });
      const svg = await drawFlow(flow);
      if (mine !== this.generation) return;
      this.show(svg, flow);
      fill(this.issues, issueList(response, pinIssues(svg, flow, response)));
    }
  }

  /** Shows `svg`, the drawing of `flow`, with its nodes wired to the task details. */
  private show(svg: SVGSVGElement, flow: Flow): void {
    this.graph.dataset.state = "drawn";
    fill(this.graph, svg);
    fill(this.details);
    wireNodes(svg, flow, this.details);
  }

  /** Keeps each edit at once (the Run page reads it) and redraws once typing pauses. */
  private edited(): void {
    setText(this.editor.value);
    this.graph.dataset.state = "pending";
    fill(this.issues);
    fill(this.saved);
    window.clearTimeout(this.timer);
    this.timer = window.setTimeout(() => void this.refresh(), REDRAW_AFTER_MS);
  }

  /** Parses the editor's text, draws the flow, validates it and pins what Validate found. */
  private async refresh(): Promise<void> {
    const mine = ++this.generation;
    setText(this.editor.value);
    const parsed = parseDocument(this.editor.value);
    fill(this.origin, originLine(parsed.ok ? parsed.request.flow : undefined));
    if (!parsed.ok || !parsed.request.flow) {
      this.graph.dataset.state = "invalid-document";
      fill(this.graph, h("p", { class: "error", role: "alert" }, parsed.ok ? "The document has no flow." : parsed.error));
      fill(this.issues);
      return;
    }
    const { flow, input, stubs } = parsed.request;
    const svg = await drawFlow(flow);
    if (mine !== this.generation) return;
    this.show(svg, flow);
    try {
      const response = await flowService.validate(create(ValidateRequestSchema, { flow, input, stubs }));
      if (mine === this.generation) fill(this.issues, issueList(response, pinIssues(svg, flow, response)));
    } catch (error) {
      fill(this.issues, h("p", { class: "error", role: "alert" }, `Validate failed: ${describeError(error)}`));
    }
  }

  dispose(): void {
    window.clearTimeout(this.timer);
  }
}

export function flowsPage(): Page {
  return new FlowsPage();
}

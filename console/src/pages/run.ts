// Run: the flow of the editor, run with an input and optional stubs through
// ExecuteStream and watched live on its graph; or started detached with
// StartExecution and followed on its execution's page. A flow that is an
// unmodified version of the registry runs by reference (flow_ref), so that
// the history records the version.

import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { describeError, executionService, flowService, isAbort } from "../api";
import { fill, h } from "../dom";
import { currentText, parseDocument } from "../flowdoc";
import { StartExecutionRequestSchema } from "../gen/flowmanager/v1/execution_service_pb";
import { FlowSchema, type Flow } from "../gen/flowmanager/v1/flow_pb";
import { ExecuteStreamRequestSchema, TaskStubSchema, type ExecuteRequest } from "../gen/flowmanager/v1/flow_service_pb";
import { drawFlow } from "../graph";
import { formatRef, unmodifiedRef, type FlowRef } from "../origin";
import { navigate } from "../router";
import { RunState, paint } from "../runstate";
import { decisionList, eventList, statusBadge, timeline } from "../views";
import type { Page } from "./page";

function jsonOf(text: string, what: string): JsonValue {
  if (!text.trim()) return {};
  try {
    return JSON.parse(text) as JsonValue;
  } catch (error) {
    throw new Error(`${what} is not JSON: ${(error as Error).message}`);
  }
}

function noFlow(message: string): Page {
  const element = h(
    "section",
    { class: "page" },
    h("h1", {}, "Run"),
    h("p", {}, message, " ", h("a", { href: "/flows", "data-link": true }, "Edit the flow"), "."),
  );
  return { element, title: "Run", dispose: () => {} };
}

function jsonEditor(id: string, label: string, value: string): HTMLTextAreaElement {
  const editor = h("textarea", { id, class: "small-editor", spellcheck: "false", "aria-label": label });
  editor.value = value;
  return editor;
}

class RunPage implements Page {
  readonly title = "Run";
  readonly element: HTMLElement;
  private readonly input: HTMLTextAreaElement;
  private readonly stubs: HTMLTextAreaElement;
  private readonly graph = h("div", { class: "graph", id: "run-graph" });
  private readonly status = h("div", { class: "run-status", id: "run-status", "aria-live": "polite", "data-status": "" });
  private readonly live = h("div", { class: "live" });
  private readonly runButton = h("button", { type: "button", class: "primary", id: "run" }, "Run");
  private readonly stopButton = h("button", { type: "button", id: "stop", disabled: true }, "Stop");
  private svg?: SVGSVGElement;
  private controller?: AbortController;
  private current?: RunState;
  /** The registry version the flow is, run by reference; undefined for a flow sent inline. */
  private readonly ref?: FlowRef;

  constructor(private readonly flow: Flow, request: ExecuteRequest) {
    this.ref = unmodifiedRef(flow);
    const stubs = Object.fromEntries(Object.entries(request.stubs).map(([name, stub]) => [name, toJson(TaskStubSchema, stub)]));
    this.input = jsonEditor("run-input", "Input (a JSON object)", JSON.stringify(request.input ?? {}, null, 2));
    this.stubs = jsonEditor("run-stubs", "Stubs (JSON, by task name)", Object.keys(stubs).length ? JSON.stringify(stubs, null, 2) : "");
    this.runButton.addEventListener("click", () => void this.run());
    this.stopButton.addEventListener("click", () => this.controller?.abort());
    this.element = h(
      "section",
      { class: "page run-page", "aria-labelledby": "run-title" },
      h(
        "div",
        { class: "pane" },
        h("h1", { id: "run-title" }, `Run ${flow.name || flow.id || "the flow"}`),
        h("p", {}, h("a", { href: "/flows", "data-link": true }, "Edit the flow")),
        h(
          "p",
          { id: "run-flow-ref", "data-ref": this.ref ? formatRef(this.ref) : "" },
          this.ref ? h("span", {}, "Runs ", h("code", {}, formatRef(this.ref)), " of the registry, by reference.") : "Runs the editor's flow, sent inline.",
        ),
        h("label", { for: "run-input" }, "Input (a JSON object)"),
        this.input,
        h("label", { for: "run-stubs" }, 'Stubs (optional; JSON by task name, e.g. {"task2": {"outcome": "TASK_OUTCOME_FAILURE"}})'),
        this.stubs,
        h("div", { class: "toolbar" }, this.runButton, this.stopButton, h("button", { type: "button", id: "start", onclick: () => void this.start() }, "Start detached")),
        this.status,
      ),
      h("div", { class: "pane graph-pane" }, h("h2", {}, "Graph"), this.graph, this.live),
    );
    void drawFlow(flow).then((drawn) => {
      this.svg = drawn;
      fill(this.graph, drawn);
      this.graph.dataset.state = "drawn";
      if (this.current) paint(drawn, this.current);
    });
  }

  /** The request body: the flow (or its reference), with the input and stubs of the two editors. */
  private body(): JsonValue {
    const flow: JsonValue = this.ref ? { flowRef: { flowId: this.ref.flowId, version: this.ref.version } } : { flow: toJson(FlowSchema, this.flow) };
    return { ...flow, input: jsonOf(this.input.value, "The input"), stubs: jsonOf(this.stubs.value, "The stubs") };
  }

  private show(state: RunState, error = ""): void {
    if (this.svg) paint(this.svg, state);
    this.status.dataset.status = state.status;
    fill(
      this.status,
      statusBadge(state.status),
      state.executionId ? h("a", { href: `/executions/${state.executionId}`, "data-link": true, class: "execution-link" }, ` execution ${state.executionId}`) : null,
      state.result?.error ? h("p", { class: "error" }, `${state.result.errorType}: ${state.result.error}`) : null,
      error ? h("p", { class: "error", role: "alert" }, error) : null,
    );
    fill(this.live, h("h2", {}, "Timeline"), timeline(state), h("h2", {}, "Decisions"), decisionList(state), h("h2", {}, "Events"), eventList(state));
  }

  /** Runs the flow through ExecuteStream, showing each event as it arrives. */
  private async run(): Promise<void> {
    this.controller?.abort();
    const controller = new AbortController();
    const state = new RunState();
    this.controller = controller;
    this.current = state;
    this.runButton.disabled = true;
    this.stopButton.disabled = false;
    this.show(state);
    try {
      const request = fromJson(ExecuteStreamRequestSchema, this.body());
      for await (const event of flowService.executeStream(request, { signal: controller.signal })) {
        state.apply(event);
        this.show(state);
      }
    } catch (error) {
      if (isAbort(error)) state.end("CANCELLED");
      this.show(state, isAbort(error) ? "Stopped: the server cancels an execution whose caller goes away." : describeError(error));
    } finally {
      this.runButton.disabled = false;
      this.stopButton.disabled = true;
    }
  }

  /** Starts the flow detached (StartExecution) and opens its execution's page. */
  private async start(): Promise<void> {
    try {
      const response = await executionService.startExecution(fromJson(StartExecutionRequestSchema, this.body()));
      if (response.execution) navigate(`/executions/${response.execution.executionId}`);
    } catch (error) {
      fill(this.status, h("p", { class: "error", role: "alert" }, describeError(error)));
    }
  }

  dispose(): void {
    this.controller?.abort();
  }
}

export function runPage(): Page {
  const parsed = parseDocument(currentText());
  if (!parsed.ok) return noFlow(parsed.error);
  if (!parsed.request.flow) return noFlow("The document has no flow.");
  return new RunPage(parsed.request.flow, parsed.request);
}

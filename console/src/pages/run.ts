// Run: the flow of the editor, run with an input and optional stubs through
// ExecuteStream and watched live on its graph; or started detached with
// StartExecution and followed on its execution's page.

import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { describeError, executionService, flowService, isAbort } from "../api";
import { fill, h } from "../dom";
import { currentText, parseDocument } from "../flowdoc";
import { StartExecutionRequestSchema } from "../gen/flowmanager/v1/execution_service_pb";
import { FlowSchema, type Flow } from "../gen/flowmanager/v1/flow_pb";
import { ExecuteStreamRequestSchema, TaskStubSchema } from "../gen/flowmanager/v1/flow_service_pb";
import { drawFlow } from "../graph";
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

export function runPage(): Page {
  const parsed = parseDocument(currentText());
  if (!parsed.ok || !parsed.request.flow) {
    const element = h(
      "section",
      { class: "page" },
      h("h1", {}, "Run"),
      h("p", {}, parsed.ok ? "The document has no flow." : parsed.error, " ", h("a", { href: "/flows", "data-link": true }, "Edit the flow"), "."),
    );
    return { element, title: "Run", dispose: () => {} };
  }
  const request = parsed.request;
  const flow: Flow = request.flow!;
  const stubs = Object.fromEntries(Object.entries(request.stubs).map(([name, stub]) => [name, toJson(TaskStubSchema, stub)]));
  const input = h("textarea", { id: "run-input", class: "small-editor", spellcheck: "false", "aria-label": "Input (a JSON object)" });
  input.value = JSON.stringify(request.input ?? {}, null, 2);
  const stubsEditor = h("textarea", { id: "run-stubs", class: "small-editor", spellcheck: "false", "aria-label": "Stubs (JSON, by task name)" });
  stubsEditor.value = Object.keys(stubs).length ? JSON.stringify(stubs, null, 2) : "";
  const graph = h("div", { class: "graph", id: "run-graph" });
  const status = h("div", { class: "run-status", id: "run-status", "aria-live": "polite", "data-status": "" });
  const live = h("div", { class: "live" });
  const runButton = h("button", { type: "button", class: "primary", id: "run" }, "Run");
  const stopButton = h("button", { type: "button", id: "stop", disabled: true }, "Stop");
  const startButton = h("button", { type: "button", id: "start" }, "Start detached");
  let svg: SVGSVGElement | undefined;
  let controller: AbortController | undefined;
  let current: RunState | undefined;

  const body = () => ({
    flow: toJson(FlowSchema, flow),
    input: jsonOf(input.value, "The input"),
    stubs: jsonOf(stubsEditor.value, "The stubs"),
  });

  function show(state: RunState, error = ""): void {
    if (svg) paint(svg, state);
    status.dataset.status = state.status;
    fill(
      status,
      statusBadge(state.status),
      state.executionId ? h("a", { href: `/executions/${state.executionId}`, "data-link": true, class: "execution-link" }, ` execution ${state.executionId}`) : null,
      state.result?.error ? h("p", { class: "error" }, `${state.result.errorType}: ${state.result.error}`) : null,
      error ? h("p", { class: "error", role: "alert" }, error) : null,
    );
    fill(live, h("h2", {}, "Timeline"), timeline(state), h("h2", {}, "Decisions"), decisionList(state), h("h2", {}, "Events"), eventList(state));
  }

  async function run(): Promise<void> {
    controller?.abort();
    const mine = new AbortController();
    controller = mine;
    const state = new RunState();
    current = state;
    runButton.disabled = true;
    stopButton.disabled = false;
    show(state);
    try {
      const message = fromJson(ExecuteStreamRequestSchema, body());
      for await (const event of flowService.executeStream(message, { signal: mine.signal })) {
        state.apply(event);
        show(state);
      }
    } catch (error) {
      if (isAbort(error)) state.end("CANCELLED");
      show(state, isAbort(error) ? "Stopped: the server cancels an execution whose caller goes away." : describeError(error));
    } finally {
      runButton.disabled = false;
      stopButton.disabled = true;
    }
  }

  async function start(): Promise<void> {
    try {
      const response = await executionService.startExecution(fromJson(StartExecutionRequestSchema, body()));
      if (response.execution) navigate(`/executions/${response.execution.executionId}`);
    } catch (error) {
      fill(status, h("p", { class: "error", role: "alert" }, describeError(error)));
    }
  }

  runButton.addEventListener("click", () => void run());
  stopButton.addEventListener("click", () => controller?.abort());
  startButton.addEventListener("click", () => void start());

  const element = h(
    "section",
    { class: "page run-page", "aria-labelledby": "run-title" },
    h(
      "div",
      { class: "pane" },
      h("h1", { id: "run-title" }, `Run ${flow.name || flow.id || "the flow"}`),
      h("p", {}, h("a", { href: "/flows", "data-link": true }, "Edit the flow")),
      h("label", { for: "run-input" }, "Input (a JSON object)"),
      input,
      h("label", { for: "run-stubs" }, "Stubs (optional; JSON by task name, e.g. {\"task2\": {\"outcome\": \"TASK_OUTCOME_FAILURE\"}})"),
      stubsEditor,
      h("div", { class: "toolbar" }, runButton, stopButton, startButton),
      status,
    ),
    h("div", { class: "pane graph-pane" }, h("h2", {}, "Graph"), graph, live),
  );
  void drawFlow(flow).then((drawn) => {
    svg = drawn;
    fill(graph, drawn);
    graph.dataset.state = "drawn";
    if (current) paint(drawn, current);
  });
  return { element, title: "Run", dispose: () => controller?.abort() };
}

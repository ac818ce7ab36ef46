// One execution (/executions/ID): its summary, its graph lit by its events,
// a timeline of its task runs, the decisions explained, each task's data,
// every event, and a Cancel button while it runs. GetExecution gives the
// request and summary, WatchExecution the events: the stored ones, then live.

import { describeError, executionService, isAbort } from "../api";
import { fill, h } from "../dom";
import { formatMs, formatTime, pretty, timestampMs } from "../format";
import { ExecutionState, type Execution } from "../gen/flowmanager/v1/execution_service_pb";
import { drawFlow } from "../graph";
import { RunState, paint } from "../runstate";
import { decisionList, eventList, statusBadge, taskData, timeline } from "../views";
import { shownStatus } from "./executions";
import type { Page } from "./page";

const RECONNECTS = 3;
const RECONNECT_AFTER_MS = 1000;
const TICK_MS = 500;

function summary(execution: Execution, cancel: HTMLButtonElement): HTMLElement {
  const status = shownStatus(execution);
  const result = execution.result;
  const end = execution.endTime ? timestampMs(execution.endTime) : Date.now();
  cancel.hidden = execution.state !== ExecutionState.RUNNING;
  return h(
    "div",
    { class: "summary", id: "execution-summary", "data-status": status, "data-state": execution.state === ExecutionState.RUNNING ? "RUNNING" : "FINISHED" },
    h("p", {}, statusBadge(status), " ", cancel),
    h(
      "dl",
      {},
      h("dt", {}, "Flow"),
      h("dd", {}, execution.flowId || "(no id)"),
      h("dt", {}, "Started"),
      h("dd", {}, formatTime(execution.startTime)),
      h("dt", {}, execution.endTime ? "Took" : "Running for"),
      h("dd", { id: execution.endTime ? undefined : "running-for" }, formatMs(end - timestampMs(execution.startTime))),
      result?.failedTask ? h("dt", {}, "Failed task") : null,
      result?.failedTask ? h("dd", {}, result.failedTask) : null,
      result?.error ? h("dt", {}, "Error") : null,
      result?.error ? h("dd", { class: "error" }, `${result.errorType}: ${result.error}`) : null,
    ),
    result?.output !== undefined ? h("details", {}, h("summary", {}, "Output"), h("pre", {}, pretty(result.output))) : null,
    h("details", {}, h("summary", {}, "Input"), h("pre", {}, pretty(execution.request?.input ?? {}))),
  );
}

export function executionPage(id: string): Page {
  const controller = new AbortController();
  const state = new RunState();
  const head = h("div", { class: "pane" });
  const graph = h("div", { class: "graph", id: "execution-graph" });
  const timelineBox = h("div", { class: "timeline" });
  const decisionsBox = h("div");
  const tasksBox = h("div");
  const eventsBox = h("div");
  const live = h("div", { class: "live" }, h("h2", {}, "Timeline"), timelineBox, h("h2", {}, "Decisions"), decisionsBox, h("h2", {}, "Tasks"), tasksBox, h("h2", {}, "Events"), eventsBox);
  const message = h("div", { "aria-live": "polite" });
  const cancel = h("button", { type: "button", id: "cancel", class: "danger", hidden: true }, "Cancel");
  let execution: Execution | undefined;
  let svg: SVGSVGElement | undefined;
  let ticker = 0;

  /** Redraws what the events show; the summary changes only when the execution is fetched. */
  const render = () => {
    if (svg) paint(svg, state);
    fill(timelineBox, timeline(state));
    fill(decisionsBox, decisionList(state));
    fill(tasksBox, taskData(state));
    fill(eventsBox, eventList(state));
  };
  const showExecution = (fetched: Execution | undefined) => {
    execution = fetched;
    if (execution && execution.state !== ExecutionState.RUNNING) state.end(shownStatus(execution), timestampMs(execution.endTime) || Date.now());
    if (execution) fill(head, summary(execution, cancel));
    render();
  };
  const refetch = async () => {
    showExecution((await executionService.getExecution({ executionId: id }, { signal: controller.signal })).execution);
  };

  async function watch(): Promise<void> {
    for (let attempt = 0; attempt <= RECONNECTS && !controller.signal.aborted; attempt += 1) {
      try {
        const stream = executionService.watchExecution({ executionId: id, afterSequence: state.lastSequence }, { signal: controller.signal });
        for await (const response of stream) {
          if (response.event) state.apply(response.event);
          if (response.event?.event.case === "executionFinished") await refetch();
          else render();
        }
        // The stream ends when the execution does, with or without an
        // execution_finished event (a cancelled execution has none).
        await refetch();
        return;
      } catch (error) {
        if (isAbort(error) || controller.signal.aborted) return;
        fill(message, h("p", { class: "error", role: "alert" }, `Watching failed: ${describeError(error)}`));
        await new Promise((resolve) => window.setTimeout(resolve, RECONNECT_AFTER_MS));
      }
    }
  }

  cancel.addEventListener("click", async () => {
    cancel.disabled = true;
    try {
      showExecution((await executionService.cancelExecution({ executionId: id })).execution);
    } catch (error) {
      fill(message, h("p", { class: "error", role: "alert" }, `Cancel failed: ${describeError(error)}`));
    } finally {
      cancel.disabled = false;
    }
  });

  async function start(): Promise<void> {
    try {
      await refetch();
    } catch (error) {
      if (!isAbort(error)) fill(head, h("p", { class: "error", role: "alert", id: "execution-error" }, describeError(error)));
      return;
    }
    const flow = execution?.request?.flow;
    if (flow) {
      svg = await drawFlow(flow);
      fill(graph, svg);
      graph.dataset.state = "drawn";
    }
    render();
    // The running time and the running bar of the timeline grow while nothing happens.
    ticker = window.setInterval(() => {
      if (execution?.state !== ExecutionState.RUNNING) return;
      fill(timelineBox, timeline(state));
      const running = head.querySelector("#running-for");
      if (running) running.textContent = formatMs(Date.now() - timestampMs(execution.startTime));
    }, TICK_MS);
    await watch();
  }

  void start();
  const element = h(
    "section",
    { class: "page execution-page", "aria-labelledby": "execution-title" },
    h("div", { class: "pane" }, h("h1", { id: "execution-title" }, "Execution ", h("code", {}, id)), h("p", {}, h("a", { href: "/executions", "data-link": true }, "All executions")), message, head),
    h("div", { class: "pane graph-pane" }, h("h2", {}, "Graph"), graph, live),
  );
  return {
    element,
    title: `Execution ${id}`,
    dispose: () => {
      controller.abort();
      window.clearInterval(ticker);
    },
  };
}

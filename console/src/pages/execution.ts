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
import { refPath } from "../origin";
import { flowLabel, shownStatus } from "./executions";
import type { Page } from "./page";

const RECONNECTS = 3;
const RECONNECT_AFTER_MS = 1000;
const TICK_MS = 500;

/** The flow's id, or a link that loads its registry version into the Flows page. */
function flowCell(execution: Execution): Node | string {
  if (execution.flowVersion <= 0) return execution.flowId || "(no id)";
  const ref = { flowId: execution.flowId, version: execution.flowVersion };
  return h("a", { href: refPath(ref), "data-link": true, id: "flow-version-link", title: "Open this version in the Flows page" }, h("code", {}, flowLabel(execution)));
}

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
      h("dd", { id: "execution-flow", "data-flow": flowLabel(execution) }, flowCell(execution)),
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

/** The parts of the page that the events redraw. */
class LiveParts {
  readonly timeline = h("div", { class: "timeline" });
  readonly decisions = h("div");
  readonly tasks = h("div");
  readonly events = h("div");
  readonly element = h("div", { class: "live" }, h("h2", {}, "Timeline"), this.timeline, h("h2", {}, "Decisions"), this.decisions, h("h2", {}, "Tasks"), this.tasks, h("h2", {}, "Events"), this.events);

  render(state: RunState): void {
    fill(this.timeline, timeline(state));
    fill(this.decisions, decisionList(state));
    fill(this.tasks, taskData(state));
    fill(this.events, eventList(state));
  }
}

class ExecutionPage implements Page {
  readonly title: string;
  readonly element: HTMLElement;
  private readonly controller = new AbortController();
  private readonly state = new RunState();
  private readonly head = h("div", { class: "pane" });
  private readonly graph = h("div", { class: "graph", id: "execution-graph" });
  private readonly live = new LiveParts();
  private readonly message = h("div", { "aria-live": "polite" });
  private readonly cancel = h("button", { type: "button", id: "cancel", class: "danger", hidden: true }, "Cancel");
  private execution?: Execution;
  private svg?: SVGSVGElement;
  private ticker = 0;

  constructor(private readonly id: string) {
    this.title = `Execution ${id}`;
    this.cancel.addEventListener("click", () => void this.cancelExecution());
    this.element = h(
      "section",
      { class: "page execution-page", "aria-labelledby": "execution-title" },
      h("div", { class: "pane" }, h("h1", { id: "execution-title" }, "Execution ", h("code", {}, id)), h("p", {}, h("a", { href: "/executions", "data-link": true }, "All executions")), this.message, this.head),
      h("div", { class: "pane graph-pane" }, h("h2", {}, "Graph"), this.graph, this.live.element),
    );
    void this.start();
  }

  /** Redraws what the events show; the summary changes only when the execution is read. */
  private render(): void {
    if (this.svg) paint(this.svg, this.state);
    this.live.render(this.state);
  }

  private show(execution: Execution | undefined): void {
    this.execution = execution;
    if (execution) {
      if (execution.state !== ExecutionState.RUNNING) this.state.end(shownStatus(execution), timestampMs(execution.endTime) || Date.now());
      fill(this.head, summary(execution, this.cancel));
    }
    this.render();
  }

  private async refetch(): Promise<void> {
    this.show((await executionService.getExecution({ executionId: this.id }, { signal: this.controller.signal })).execution);
  }

  private fail(text: string): void {
    fill(this.message, h("p", { class: "error", role: "alert" }, text));
  }

  /** Reads the execution, draws its flow, then follows its events until it ends. */
  private async start(): Promise<void> {
    try {
      await this.refetch();
    } catch (error) {
      if (!isAbort(error)) fill(this.head, h("p", { class: "error", role: "alert", id: "execution-error" }, describeError(error)));
      return;
    }
    const flow = this.execution?.request?.flow;
    if (flow) {
      this.svg = await drawFlow(flow);
      fill(this.graph, this.svg);
      this.graph.dataset.state = "drawn";
    }
    this.render();
    this.ticker = window.setInterval(() => this.tick(), TICK_MS);
    await this.watch();
  }

  /** The running time and the running bar of the timeline grow while no event comes. */
  private tick(): void {
    const execution = this.execution;
    if (execution?.state !== ExecutionState.RUNNING) return;
    fill(this.live.timeline, timeline(this.state));
    const running = this.head.querySelector("#running-for");
    if (running) running.textContent = formatMs(Date.now() - timestampMs(execution.startTime));
  }

  /** WatchExecution from the last event seen, again after a broken stream (a few times). */
  private async watch(): Promise<void> {
    const signal = this.controller.signal;
    for (let attempt = 0; attempt <= RECONNECTS && !signal.aborted; attempt += 1) {
      try {
        const stream = executionService.watchExecution({ executionId: this.id, afterSequence: this.state.lastSequence }, { signal });
        for await (const response of stream) {
          if (response.event) this.state.apply(response.event);
          this.render();
        }
        // The stream ends when the execution does, with or without an
        // execution_finished event (a cancelled execution has none).
        await this.refetch();
        return;
      } catch (error) {
        if (isAbort(error) || signal.aborted) return;
        this.fail(`Watching failed: ${describeError(error)}`);
        await new Promise((resolve) => window.setTimeout(resolve, RECONNECT_AFTER_MS));
      }
    }
  }

  private async cancelExecution(): Promise<void> {
    this.cancel.disabled = true;
    try {
      this.show((await executionService.cancelExecution({ executionId: this.id })).execution);
    } catch (error) {
      this.fail(`Cancel failed: ${describeError(error)}`);
    } finally {
      this.cancel.disabled = false;
    }
  }

  dispose(): void {
    this.controller.abort();
    window.clearInterval(this.ticker);
  }
}

export function executionPage(id: string): Page {
  return new ExecutionPage(id);
}

// What an execution's events say so far, folded into one state that the graph,
// the timeline and the event list are drawn from. The Run page feeds it from
// ExecuteStream, an execution's page from WatchExecution: the same events.

import type {
  ConditionEvaluatedEvent,
  ExecuteResponse,
  ExecuteStreamResponse,
  TaskResult,
} from "./gen/flowmanager/v1/flow_service_pb";
import { Branch, ExecutionStatus, TaskOutcome } from "./gen/flowmanager/v1/flow_service_pb";
import { durationMs, formatMs, statusName, timestampMs } from "./format";

export type TaskState = "idle" | "running" | "retrying" | "succeeded" | "failed" | "cancelled";

/** One task as the run has left it. */
export interface TaskView {
  state: TaskState;
  /** How many times it started. */
  runs: number;
  /** What the node says under its description: attempts, a pending retry. */
  note: string;
}

/** One task run, for the timeline. */
export interface TaskRun {
  task: string;
  step: number;
  startMs: number;
  /** 0 while it runs. */
  endMs: number;
  result?: TaskResult;
  retries: number;
}

export class RunState {
  executionId = "";
  events: ExecuteStreamResponse[] = [];
  tasks = new Map<string, TaskView>();
  /** How many times each edge (by its graph key) was taken. */
  edges = new Map<string, number>();
  decisions: ConditionEvaluatedEvent[] = [];
  runs: TaskRun[] = [];
  result?: ExecuteResponse;
  /** How the execution ended when no execution_finished event says so (a cancellation). */
  private ended = "";
  private pending?: { task: string; succeeded: boolean };

  /** The last sequence applied, to resume a watch from. */
  get lastSequence(): bigint {
    return this.events.at(-1)?.sequence ?? 0n;
  }

  /** COMPLETED, FAILED, ... once finished; RUNNING before. */
  get status(): string {
    if (!this.result) return this.ended || (this.events.length ? "RUNNING" : "");
    return statusName(this.result.status) || "FINISHED";
  }

  /**
   * Records that the execution ended with `status` though its events stop
   * short of execution_finished: a history written by an older server, whose
   * cancelled executions had no last event. A task still running then was
   * cancelled with it.
   */
  end(status: string, endMs = Date.now()): void {
    if (this.result || this.ended) return;
    this.ended = status;
    this.pending = undefined;
    for (const run of this.runs) if (!run.endMs) run.endMs = endMs;
    for (const view of this.tasks.values()) {
      if (view.state === "running" || view.state === "retrying") {
        view.state = "cancelled";
        view.note = status.toLowerCase();
      }
    }
  }

  private take(key: string): void {
    this.edges.set(key, (this.edges.get(key) ?? 0) + 1);
  }

  private view(task: string): TaskView {
    let view = this.tasks.get(task);
    if (!view) {
      view = { state: "idle", runs: 0, note: "" };
      this.tasks.set(task, view);
    }
    return view;
  }

  /** A task without conditions went on to the next task, or its failure stopped the flow. */
  private settlePending(): void {
    if (this.pending) this.take(`${this.pending.succeeded ? "next" : "stop"}:${this.pending.task}`);
    this.pending = undefined;
  }

  apply(event: ExecuteStreamResponse): void {
    if (event.sequence <= this.lastSequence) return; // a repeat after a reconnect
    this.events.push(event);
    this.executionId = event.executionId;
    const time = timestampMs(event.time);
    const e = event.event;
    switch (e.case) {
      case "executionStarted":
        this.take("start");
        break;
      case "taskStarted": {
        this.settlePending();
        const view = this.view(e.value.task);
        view.state = "running";
        view.runs += 1;
        view.note = view.runs > 1 ? `run ${view.runs}` : "";
        this.runs.push({ task: e.value.task, step: e.value.step, startMs: time, endMs: 0, retries: 0 });
        break;
      }
      case "taskRetrying": {
        const view = this.view(e.value.task);
        view.state = "retrying";
        view.note = `attempt ${e.value.attempt} failed (${e.value.errorType || "error"}), retry in ${formatMs(durationMs(e.value.delay))}`;
        const run = this.runs.findLast((r) => r.task === e.value.task);
        if (run) run.retries += 1;
        break;
      }
      case "taskFinished": {
        const result = e.value.result;
        if (!result) break;
        const succeeded = result.outcome === TaskOutcome.SUCCESS;
        const view = this.view(result.task);
        // CancelExecution ends the running task with the error type "Cancelled".
        const cancelled = !succeeded && result.errorType === "Cancelled";
        view.state = succeeded ? "succeeded" : cancelled ? "cancelled" : "failed";
        const notes = [view.runs > 1 ? `${view.runs} runs` : "", result.attempts > 1 ? `${result.attempts} attempts` : "", formatMs(durationMs(result.duration))];
        view.note = notes.filter(Boolean).join(" · ");
        const run = this.runs.findLast((r) => r.task === result.task && !r.endMs);
        if (run) {
          run.result = result;
          run.endMs = timestampMs(result.startTime) + durationMs(result.duration) || time;
        }
        this.pending = { task: result.task, succeeded };
        break;
      }
      case "conditionEvaluated":
        this.pending = undefined;
        this.decisions.push(e.value);
        this.take(`condition:${e.value.conditionIndex}:${e.value.branch === Branch.SUCCESS}`);
        break;
      case "executionFinished":
        this.result = e.value.result;
        // A run stopped by a deadline or a cancellation took no edge.
        if (this.result?.status === ExecutionStatus.COMPLETED || this.result?.status === ExecutionStatus.FAILED) {
          this.settlePending();
        }
        this.pending = undefined;
        // A task still running when the end was recorded for it (its caller
        // went away, its owner died) ended with the execution.
        const cut = this.result?.status === ExecutionStatus.CANCELLED ? "cancelled" : "failed";
        for (const view of this.tasks.values()) {
          if (view.state === "running" || view.state === "retrying") view.state = cut;
        }
        break;
    }
  }
}

/** Shows `state` on a graph drawn by graph.ts: node states and notes, taken edges. */
export function paint(svg: SVGSVGElement, state: RunState): void {
  svg.dataset.status = state.status;
  for (const node of svg.querySelectorAll<SVGGElement>(".node[data-task]")) {
    const view = state.tasks.get(node.dataset.task ?? "");
    node.dataset.state = view?.state ?? "idle";
    const note = node.querySelector(".node-note");
    if (note) note.textContent = view?.note ?? "";
  }
  for (const edge of svg.querySelectorAll<SVGGElement>(".edge")) {
    const times = state.edges.get(edge.dataset.key ?? "") ?? 0;
    edge.dataset.taken = String(times > 0);
    edge.dataset.times = String(times);
  }
}

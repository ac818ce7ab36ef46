// Pieces that the Run page and an execution's page both show: the status,
// the events, the decisions explained, the timeline and each task's data.

import { h } from "./dom";
import { durationMs, formatMs, outcomeName, pretty, statusName, timestampMs } from "./format";
import type { ConditionEvaluatedEvent, ExecuteStreamResponse } from "./gen/flowmanager/v1/flow_service_pb";
import { Branch } from "./gen/flowmanager/v1/flow_service_pb";
import type { RunState } from "./runstate";

/** A status word (COMPLETED, FAILED, RUNNING, ...) as a coloured badge. */
export function statusBadge(status: string): HTMLElement {
  return h("span", { class: "status", "data-status": status || "NONE" }, status || "—");
}

/** What a condition decided, in a sentence. */
export function explainDecision(decision: ConditionEvaluatedEvent): string {
  const test = decision.expression || `outcome == ${decision.expectedOutcome}`;
  const branch = decision.branch === Branch.SUCCESS ? "success" : "failure";
  const chain = decision.linksTested > 1 ? ` (link ${decision.linksTested} of its chain)` : "";
  return `After ${decision.sourceTask} (${outcomeName(decision.actualOutcome)}), ${decision.condition || `condition ${decision.conditionIndex}`}${chain} tested ${test}: ${decision.value} → ${branch} branch, next ${decision.nextTask}`;
}

/** One event in a line. */
export function describeEvent(event: ExecuteStreamResponse): string {
  const e = event.event;
  switch (e.case) {
    case "executionStarted":
      return `execution started: flow ${e.value.flowId || e.value.flowName || "(no id)"}, first task ${e.value.startTask}`;
    case "taskStarted":
      return `task ${e.value.task} started (step ${e.value.step}, type ${e.value.type})`;
    case "taskRetrying":
      return `task ${e.value.task}: attempt ${e.value.attempt} failed (${e.value.errorType}: ${e.value.error}); retry in ${formatMs(durationMs(e.value.delay))}`;
    case "taskFinished": {
      const r = e.value.result;
      if (!r) return "task finished";
      const error = r.error ? `: ${r.errorType} ${r.error}` : "";
      return `task ${r.task} finished ${outcomeName(r.outcome)} in ${formatMs(durationMs(r.duration))}${r.attempts > 1 ? ` after ${r.attempts} attempts` : ""}${error}`;
    }
    case "conditionEvaluated":
      return explainDecision(e.value);
    case "executionFinished": {
      const r = e.value.result;
      return `execution finished ${r ? statusName(r.status) : ""}`;
    }
    default:
      return "unknown event";
  }
}

/** Every event so far, in sequence order. */
export function eventList(state: RunState): HTMLElement {
  const first = timestampMs(state.events[0]?.time);
  return h(
    "ol",
    { class: "events", "aria-label": "events" },
    ...state.events.map((event) =>
      h(
        "li",
        { "data-event": event.event.case ?? "", "data-sequence": String(event.sequence) },
        h("span", { class: "event-offset" }, `+${formatMs(timestampMs(event.time) - first)}`),
        " ",
        describeEvent(event),
      ),
    ),
  );
}

/** The decisions explained, one sentence each. */
export function decisionList(state: RunState): HTMLElement {
  if (!state.decisions.length) return h("p", { class: "muted" }, "No condition has decided yet.");
  return h(
    "ol",
    { class: "decisions" },
    ...state.decisions.map((decision) =>
      h("li", { "data-branch": decision.branch === Branch.SUCCESS ? "success" : "failure", "data-value": String(decision.value) }, explainDecision(decision)),
    ),
  );
}

/** A Gantt chart of the task runs: one bar per run, from its start to its end (or now). */
export function timeline(state: RunState, now = Date.now()): HTMLElement {
  if (!state.runs.length) return h("p", { class: "muted" }, "No task has run yet.");
  const start = Math.min(...state.runs.map((run) => run.startMs));
  const end = Math.max(...state.runs.map((run) => run.endMs || now), start + 1);
  const span = end - start;
  return h(
    "div",
    { class: "gantt", role: "table", "aria-label": "timeline of task runs" },
    ...state.runs.map((run) => {
      const left = ((run.startMs - start) / span) * 100;
      const width = Math.max((((run.endMs || now) - run.startMs) / span) * 100, 0.5);
      const outcome = run.result ? outcomeName(run.result.outcome) : "running";
      const took = formatMs((run.endMs || now) - run.startMs);
      return h(
        "div",
        { class: "gantt-row", role: "row", "data-task": run.task, "data-outcome": outcome },
        h("span", { class: "gantt-label", role: "cell" }, `${run.step}. ${run.task}`),
        h(
          "span",
          { class: "gantt-track", role: "cell" },
          h("span", { class: "gantt-bar", style: `left:${left}%;width:${width}%`, title: `${run.task}: ${outcome}, ${took}` }),
        ),
        h("span", { class: "gantt-time", role: "cell" }, `${took}${run.retries ? ` · ${run.retries} retries` : ""}`),
      );
    }),
  );
}

/** Each task run's inputs, output and error. */
export function taskData(state: RunState): HTMLElement {
  const finished = state.runs.filter((run) => run.result);
  if (!finished.length) return h("p", { class: "muted" }, "No task has finished yet.");
  return h(
    "div",
    { class: "task-data" },
    ...finished.map((run) => {
      const r = run.result!;
      return h(
        "details",
        { "data-task": r.task, "data-outcome": outcomeName(r.outcome) },
        h("summary", {}, `${r.step}. ${r.task}: ${outcomeName(r.outcome)}${r.stubbed ? " (stubbed)" : ""}${r.attempts > 1 ? `, ${r.attempts} attempts` : ""}`),
        r.inputs && Object.keys(r.inputs).length ? h("div", {}, h("h4", {}, "Inputs"), h("pre", {}, pretty(r.inputs))) : null,
        h("h4", {}, "Output"),
        h("pre", {}, r.output ? pretty(r.output) : "(none)"),
        r.error ? h("div", {}, h("h4", {}, "Error"), h("pre", { class: "error" }, `${r.errorType}: ${r.error}`)) : null,
      );
    }),
  );
}

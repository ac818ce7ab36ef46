// Executions: the history, newest first, filtered by flow, status and start
// time, a page at a time. The filters live in the query string, so that a
// filtered list is a link like any other.

import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { describeError, executionService } from "../api";
import { fill, h } from "../dom";
import { formatMs, formatTime, statusName, timestampMs } from "../format";
import { ExecutionState, ListExecutionsRequestSchema, type Execution } from "../gen/flowmanager/v1/execution_service_pb";
import { ExecutionStatus } from "../gen/flowmanager/v1/flow_service_pb";
import { formatRef } from "../origin";
import { navigate } from "../router";
import { statusBadge } from "../views";
import type { Page } from "./page";

const PAGE_SIZE = 20;
/** The most rows a page may have when the query string sets `size`. */
const MAX_PAGE_SIZE = 200;
const STATUSES = ["RUNNING", "COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"];

/** The flow an execution ran: `id@version` for a registry version, else its id. */
export function flowLabel(execution: Execution): string {
  return execution.flowVersion > 0 ? formatRef({ flowId: execution.flowId, version: execution.flowVersion }) : execution.flowId;
}

/** RUNNING for a running execution, else its status. */
export function shownStatus(execution: Execution): string {
  return execution.state === ExecutionState.RUNNING ? "RUNNING" : statusName(execution.status) || "FINISHED";
}

function request(query: URLSearchParams, pageToken: string) {
  const status = query.get("status") ?? "";
  const from = query.get("from");
  const to = query.get("to");
  const size = Number(query.get("size"));
  return create(ListExecutionsRequestSchema, {
    pageSize: Number.isInteger(size) && size > 0 ? Math.min(size, MAX_PAGE_SIZE) : PAGE_SIZE,
    pageToken,
    flowId: query.get("flow") ?? "",
    state: status === "RUNNING" ? ExecutionState.RUNNING : ExecutionState.UNSPECIFIED,
    status: status && status !== "RUNNING" ? ExecutionStatus[status as keyof typeof ExecutionStatus] : ExecutionStatus.UNSPECIFIED,
    startTimeFrom: from ? timestampFromMs(new Date(from).getTime()) : undefined,
    startTimeTo: to ? timestampFromMs(new Date(to).getTime()) : undefined,
  });
}

function row(execution: Execution): HTMLElement {
  const status = shownStatus(execution);
  const took = execution.endTime ? formatMs(timestampMs(execution.endTime) - timestampMs(execution.startTime)) : "";
  return h(
    "tr",
    { "data-execution-id": execution.executionId, "data-status": status, "data-flow": flowLabel(execution) },
    h("td", {}, h("a", { href: `/executions/${execution.executionId}`, "data-link": true }, execution.executionId)),
    h("td", {}, flowLabel(execution)),
    h("td", {}, statusBadge(status)),
    h("td", {}, formatTime(execution.startTime)),
    h("td", {}, took),
  );
}

function filters(query: URLSearchParams): HTMLFormElement {
  const field = (label: string, control: HTMLElement) => h("label", {}, label, control);
  const form = h(
    "form",
    { class: "filters", role: "search" },
    field("Flow id ", h("input", { name: "flow", value: query.get("flow") ?? "", type: "search" })),
    field("Status ", h("select", { name: "status" }, h("option", { value: "" }, "any"), ...STATUSES.map((s) => h("option", { value: s, selected: query.get("status") === s }, s)))),
    field("Started from ", h("input", { name: "from", type: "datetime-local", value: query.get("from") ?? "" })),
    field("to ", h("input", { name: "to", type: "datetime-local", value: query.get("to") ?? "" })),
    h("button", { type: "submit" }, "Filter"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value) chosen.set(name, String(value));
    if (query.get("size")) chosen.set("size", query.get("size") ?? "");
    const search = chosen.toString();
    navigate(`/executions${search ? `?${search}` : ""}`);
  });
  return form;
}

export function executionsPage(): Page {
  const query = new URLSearchParams(window.location.search);
  const table = h("div", { class: "table-wrap", id: "executions", "aria-live": "polite" });
  const pager = h("div", { class: "toolbar pager" });
  const tokens: string[] = [""]; // the token of each page seen, for Previous
  let index = 0;

  async function load(): Promise<void> {
    table.dataset.state = "loading";
    try {
      const response = await executionService.listExecutions(request(query, tokens[index] ?? ""));
      tokens[index + 1] = response.nextPageToken;
      fill(
        table,
        response.executions.length
          ? h("table", {}, h("thead", {}, h("tr", {}, ...["Execution", "Flow", "Status", "Started", "Took"].map((t) => h("th", { scope: "col" }, t)))), h("tbody", {}, ...response.executions.map(row)))
          : h("p", { class: "muted" }, "No executions."),
      );
      fill(
        pager,
        h("button", { type: "button", id: "previous", disabled: index === 0, onclick: () => { index -= 1; void load(); } }, "Previous"),
        h("span", { id: "page-number", "data-page": index + 1 }, `Page ${index + 1}`),
        h("button", { type: "button", id: "next", disabled: !response.nextPageToken, onclick: () => { index += 1; void load(); } }, "Next"),
        h("button", { type: "button", onclick: () => void load() }, "Refresh"),
      );
      table.dataset.state = "loaded";
    } catch (error) {
      fill(table, h("p", { class: "error", role: "alert" }, describeError(error)));
      table.dataset.state = "error";
    }
  }

  void load();
  const element = h("section", { class: "page executions-page", "aria-labelledby": "executions-title" }, h("h1", { id: "executions-title" }, "Executions"), filters(query), table, pager);
  return { element, title: "Executions", dispose: () => {} };
}

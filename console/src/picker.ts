// The registry picker of the Flows page: the registry's flows (ListFlows, a
// page at a time), then the versions of the one chosen (ListFlowVersions,
// newest first), each with a button that loads it into the editor.

import { describeError, registryService } from "./api";
import { fill, h } from "./dom";
import { formatTime } from "./format";
import type { FlowVersion } from "./gen/flowmanager/v1/flow_registry_service_pb";
import { formatRef, type FlowRef } from "./origin";

const PAGE_SIZE = 10;

interface Page {
  items: FlowVersion[];
  nextPageToken: string;
}

/**
 * A list read a page at a time: `fetch` reads the page of a token, `render`
 * draws its items. Previous goes back through the tokens seen. The element's
 * `data-state` is loading, loaded or error.
 */
function pagedList(id: string, fetch: (token: string) => Promise<Page>, render: (items: FlowVersion[]) => Node): { element: HTMLElement; load: () => Promise<void> } {
  const body = h("div");
  const pager = h("div", { class: "toolbar pager" });
  const element = h("div", { id, "aria-live": "polite" }, body, pager);
  const tokens: string[] = [""];
  let index = 0;
  const go = (step: number) => {
    index += step;
    void load();
  };
  async function load(): Promise<void> {
    element.dataset.state = "loading";
    try {
      const page = await fetch(tokens[index] ?? "");
      tokens[index + 1] = page.nextPageToken;
      fill(body, render(page.items));
      fill(
        pager,
        index > 0 || page.nextPageToken ? h("button", { type: "button", class: "previous", disabled: index === 0, onclick: () => go(-1) }, "Previous") : null,
        index > 0 || page.nextPageToken ? h("button", { type: "button", class: "next", disabled: !page.nextPageToken, onclick: () => go(1) }, "Next") : null,
      );
      element.dataset.page = String(index + 1);
      element.dataset.state = "loaded";
    } catch (error) {
      fill(body, h("p", { class: "error", role: "alert" }, describeError(error)));
      element.dataset.state = "error";
    }
  }
  return { element, load };
}

function flowTable(flows: FlowVersion[], choose: (flowId: string) => void): Node {
  if (!flows.length) return h("p", { class: "muted" }, "The registry has no flows yet: Save to registry stores the editor's.");
  const table = h(
    "table",
    {},
    h("thead", {}, h("tr", {}, ...["Flow", "Latest", "Name", "Created"].map((t) => h("th", { scope: "col" }, t)))),
    h(
      "tbody",
      {},
      ...flows.map((flow) =>
        h(
          "tr",
          { "data-flow-id": flow.flowId, "data-version": flow.version },
          h("td", {}, h("button", { type: "button", class: "link pick-flow", onclick: () => choose(flow.flowId) }, flow.flowId)),
          h("td", {}, `@${flow.version}`),
          h("td", {}, flow.flowName),
          h("td", {}, formatTime(flow.createTime)),
        ),
      ),
    ),
  );
  return h("div", { class: "table-wrap" }, table);
}

function versionList(versions: FlowVersion[], load: (ref: FlowRef) => void): Node {
  return h(
    "ol",
    { class: "versions" },
    ...versions.map((version) => {
      const ref = { flowId: version.flowId, version: version.version };
      return h(
        "li",
        { "data-version": version.version },
        h("button", { type: "button", class: "load-version", onclick: () => load(ref) }, `Load ${formatRef(ref)}`),
        ` ${version.flowName} · ${formatTime(version.createTime)} · `,
        h("code", { title: "SHA-256 of the flow" }, version.digest.slice(0, 12)),
      );
    }),
  );
}

/** The picker: a disclosure that reads the registry when first opened; `load` receives the version chosen. */
export function registryPicker(load: (ref: FlowRef) => void): HTMLDetailsElement {
  const versions = h("div", { class: "registry-versions" });
  const choose = (flowId: string) => {
    const list = pagedList(
      "registry-versions",
      async (pageToken) => {
        const response = await registryService.listFlowVersions({ flowId, pageSize: PAGE_SIZE, pageToken });
        return { items: response.versions, nextPageToken: response.nextPageToken };
      },
      (items) => versionList(items, load),
    );
    list.element.dataset.flowId = flowId;
    fill(versions, h("h3", {}, `Versions of ${flowId}`), list.element);
    void list.load();
  };
  const flows = pagedList(
    "registry-flows",
    async (pageToken) => {
      const response = await registryService.listFlows({ pageSize: PAGE_SIZE, pageToken });
      return { items: response.flows, nextPageToken: response.nextPageToken };
    },
    (items) => flowTable(items, choose),
  );
  const picker = h(
    "details",
    { class: "registry", id: "registry" },
    h("summary", {}, "Pick from the registry…"),
    h("div", { class: "toolbar" }, h("button", { type: "button", id: "registry-refresh", onclick: () => void flows.load() }, "Refresh")),
    flows.element,
    versions,
  );
  picker.addEventListener("toggle", () => {
    if (picker.open && !flows.element.dataset.state) void flows.load();
  });
  return picker;
}

// The console's shell: the navigation, the bearer-token setting, and the page
// the path names. Pages: /flows (also /), /run, /executions, /executions/ID.

import { setToken, token } from "./api";
import { fill, h } from "./dom";
import { executionPage } from "./pages/execution";
import { executionsPage } from "./pages/executions";
import { flowsPage } from "./pages/flows";
import type { Page } from "./pages/page";
import { runPage } from "./pages/run";
import { onRoute } from "./router";
import "./style.css";

const NAV: ReadonlyArray<[string, string]> = [
  ["/flows", "Flows"],
  ["/run", "Run"],
  ["/executions", "Executions"],
];

function pageFor(path: string): Page {
  const execution = /^\/executions\/([^/]+)$/.exec(path);
  if (execution) return executionPage(decodeURIComponent(execution[1] ?? ""));
  if (path === "/executions") return executionsPage();
  if (path === "/run") return runPage();
  return flowsPage();
}

function tokenSetting(): HTMLElement {
  const input = h("input", { type: "password", id: "token", autocomplete: "off", placeholder: "bearer token (optional)", "aria-label": "Bearer token" });
  input.value = token();
  input.addEventListener("change", () => setToken(input.value.trim()));
  const form = h("form", { onsubmit: (event: Event) => event.preventDefault() }, input);
  return h("details", { class: "token" }, h("summary", {}, "Token"), form);
}

const main = h("main", { id: "main", tabindex: -1 });
const links = NAV.map(([href, text]) => h("a", { href, "data-link": true }, text));
document.body.append(
  h("a", { href: "#main", class: "skip" }, "Skip to content"),
  h("header", {}, h("a", { href: "/flows", "data-link": true, class: "brand" }, "Flow Manager"), h("nav", { "aria-label": "main" }, ...links), tokenSetting()),
  main,
);

let current: Page | undefined;
onRoute(() => {
  const path = window.location.pathname.replace(/\/+$/, "") || "/";
  current?.dispose();
  current = pageFor(path);
  document.title = `${current.title} · Flow Manager`;
  for (const link of links) {
    const here = path === link.getAttribute("href") || (path.startsWith("/executions") && link.getAttribute("href") === "/executions") || (path === "/" && link.getAttribute("href") === "/flows");
    if (here) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  fill(main, current.element);
  main.dataset.page = current.title.split(" ")[0]!.toLowerCase();
});
window.dispatchEvent(new PopStateEvent("popstate"));

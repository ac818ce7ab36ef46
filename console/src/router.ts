// Client-side routes: the server answers every deep link (/executions/ID)
// with index.html, and this module picks the page from the path.

type Listener = () => void;
let listener: Listener = () => {};

/** Calls `render` whenever the path changes: links, back and forward. */
export function onRoute(render: Listener): void {
  listener = render;
  window.addEventListener("popstate", () => listener());
  document.addEventListener("click", (event) => {
    const link = (event.target as Element | null)?.closest?.("a[data-link]");
    if (!(link instanceof HTMLAnchorElement) || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    navigate(link.getAttribute("href") ?? "/");
  });
}

/** Goes to `path` (with its query) without reloading the page. */
export function navigate(path: string): void {
  if (path !== window.location.pathname + window.location.search) window.history.pushState(null, "", path);
  listener();
}

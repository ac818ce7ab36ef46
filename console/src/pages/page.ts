/** A page of the console: its element, and what to stop when the reader leaves it. */
export interface Page {
  element: HTMLElement;
  /** Aborts the page's streams and timers. */
  dispose(): void;
  /** The page's title, for the tab. */
  title: string;
}

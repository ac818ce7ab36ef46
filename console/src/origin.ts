// Where the flow of the editor came from in the registry: the version it was
// loaded from or saved as, kept for the browser tab next to the document. The
// Flows page shows it as id@version, and the Run page runs that version by
// reference (flow_ref), so that the history records it, as long as the
// editor's flow is still that version's body.

import { equals, fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { FlowSchema, type Flow } from "./gen/flowmanager/v1/flow_pb";

const STORAGE_KEY = "flowmanager.flow.origin";

/** A version of a flow in the registry. */
export interface FlowRef {
  flowId: string;
  version: number;
}

/** `id@version`, as flowctl and the history spell a version. */
export function formatRef(ref: FlowRef): string {
  return `${ref.flowId}@${ref.version}`;
}

/** The console's path that loads `ref` into the Flows page. */
export function refPath(ref: FlowRef): string {
  return `/flows?${new URLSearchParams({ flow: ref.flowId, version: String(ref.version) }).toString()}`;
}

/** The text the editor shows for a registry version: a request body, as the examples are. */
export function documentOf(flow: Flow): string {
  return `${JSON.stringify({ flow: toJson(FlowSchema, flow, { useProtoFieldName: true }) }, null, 2)}\n`;
}

/** Records that the editor's flow is `flow`, version `ref` of the registry. */
export function setOrigin(ref: FlowRef, flow: Flow): void {
  sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ ...ref, flow: toJson(FlowSchema, flow) }));
}

/** Forgets the registry origin (a file, an example or a paste replaced the flow). */
export function clearOrigin(): void {
  sessionStorage.removeItem(STORAGE_KEY);
}

/** The registry version the editor's flow was loaded from or saved as, and whether `flow` still equals it. */
export function originOf(flow: Flow | undefined): (FlowRef & { modified: boolean }) | undefined {
  const stored = sessionStorage.getItem(STORAGE_KEY);
  if (!stored) return undefined;
  try {
    const origin = JSON.parse(stored) as FlowRef & { flow: JsonValue };
    const body = fromJson(FlowSchema, origin.flow);
    return { flowId: origin.flowId, version: origin.version, modified: !flow || !equals(FlowSchema, flow, body) };
  } catch {
    return undefined;
  }
}

/** The version to run by reference: the origin, when `flow` is still its body. */
export function unmodifiedRef(flow: Flow | undefined): FlowRef | undefined {
  const origin = originOf(flow);
  return origin && !origin.modified ? { flowId: origin.flowId, version: origin.version } : undefined;
}

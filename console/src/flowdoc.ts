// The flow being edited: its text (JSON or YAML), shared by the Flows and Run
// pages and kept for the browser tab, and its parsing into the request that
// Validate, ExecuteStream and StartExecution take.

import { fromJson, ScalarType, type DescMessage, type JsonValue } from "@bufbuild/protobuf";
import { parse as parseYaml } from "yaml";
import failureFlow from "../../examples/seed-failure.json?raw";
import branchingFlow from "../../examples/branching-flow.json?raw";
import retryFlow from "../../examples/retry-flow.json?raw";
import seedFlow from "../../examples/seed-flow.json?raw";
import slowFlow from "../../examples/slow-flow.json?raw";
import { ConditionSchema, FlowSchema, RetryPolicySchema, TaskSchema } from "./gen/flowmanager/v1/flow_pb";
import {
  ExecuteRequestSchema,
  TaskStubSchema,
  type ExecuteRequest,
} from "./gen/flowmanager/v1/flow_service_pb";

const STORAGE_KEY = "flowmanager.flow";

/** The examples of examples/, bundled into the console so that it needs no file to start. */
export const EXAMPLES: ReadonlyArray<{ name: string; text: string }> = [
  { name: "seed-flow.json", text: seedFlow },
  { name: "seed-failure.json", text: failureFlow },
  { name: "branching-flow.json", text: branchingFlow },
  { name: "retry-flow.json", text: retryFlow },
  { name: "slow-flow.json", text: slowFlow },
];

/** The flow document of this tab: what the editor holds. */
export function currentText(): string {
  return sessionStorage.getItem(STORAGE_KEY) ?? "";
}

/** Replaces the flow document of this tab. */
export function setText(text: string): void {
  sessionStorage.setItem(STORAGE_KEY, text);
}

/** A parsed document: the request, or why the text is not one. */
export type Parsed = { ok: true; request: ExecuteRequest } | { ok: false; error: string };

/**
 * The request that `text` spells, as flowctl reads a flow file: a request
 * `{"flow": ..., "input": ..., "stubs": ...}` or a bare flow `{"start_task": ...,
 * "tasks": [...]}`, in JSON or YAML, with the proto's field names (snake_case
 * or their lowerCamel JSON names). Unknown fields are errors, so that a typo
 * does not pass silently.
 */
export function parseDocument(text: string): Parsed {
  if (!text.trim()) return { ok: false, error: "Paste or open a flow (JSON or YAML)." };
  let value: unknown;
  try {
    value = text.trimStart().startsWith("{") ? JSON.parse(text) : parseYaml(text);
  } catch (error) {
    return { ok: false, error: `Not JSON or YAML: ${(error as Error).message}` };
  }
  if (value === null || typeof value !== "object" || Array.isArray(value)) {
    return { ok: false, error: "The document must be an object: a request or a flow." };
  }
  const object = value as Record<string, unknown>;
  const body = "flow" in object ? object : { flow: object };
  try {
    return { ok: true, request: fromJson(ExecuteRequestSchema, body as JsonValue) };
  } catch (error) {
    return { ok: false, error: (error as Error).message };
  }
}

/** One field of a message of the flow, for the editor's reference. */
export interface FieldHelp {
  name: string;
  type: string;
}

function typeOf(field: DescMessage["fields"][number]): string {
  switch (field.fieldKind) {
    case "scalar":
      return ScalarType[field.scalar].toLowerCase();
    case "enum":
      return field.enum.name;
    case "message":
      return field.message.name;
    case "list":
      if (field.listKind === "message") return `list of ${field.message.name}`;
      if (field.listKind === "enum") return `list of ${field.enum.name}`;
      return `list of ${ScalarType[field.scalar].toLowerCase()}`;
    case "map":
      return field.mapKind === "message" ? `map of ${field.message.name}` : "map of string";
  }
}

/** The field names of every message a flow document uses, read from the generated schema. */
export function fieldReference(): Array<{ message: string; fields: FieldHelp[] }> {
  const messages: DescMessage[] = [
    ExecuteRequestSchema,
    FlowSchema,
    TaskSchema,
    RetryPolicySchema,
    ConditionSchema,
    TaskStubSchema,
  ];
  return messages.map((message) => ({
    message: message.name,
    fields: message.fields.map((field) => ({ name: field.name, type: typeOf(field) })),
  }));
}

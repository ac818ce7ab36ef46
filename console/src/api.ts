// The clients of the two services, over the Connect protocol to the server
// that served this page (the same HTTP port serves the console and the API).

import { fromBinary } from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { Code, ConnectError, createClient, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { ExecutionService } from "./gen/flowmanager/v1/execution_service_pb";
import { FlowRegistryService } from "./gen/flowmanager/v1/flow_registry_service_pb";
import { FlowService, ValidationIssueSchema, type ValidationIssue } from "./gen/flowmanager/v1/flow_service_pb";

const TOKEN_KEY = "flowmanager.token";

/** The bearer token the console sends, when the server requires one (docs/security.md). */
export function token(): string {
  return localStorage.getItem(TOKEN_KEY) ?? "";
}

/** Remembers `value` as the bearer token for this browser; empty forgets it. */
export function setToken(value: string): void {
  if (value) localStorage.setItem(TOKEN_KEY, value);
  else localStorage.removeItem(TOKEN_KEY);
}

const bearer: Interceptor = (next) => async (request) => {
  const value = token();
  if (value) request.header.set("authorization", `Bearer ${value}`);
  return next(request);
};

const transport = createConnectTransport({
  baseUrl: window.location.origin,
  interceptors: [bearer],
});

export const flowService = createClient(FlowService, transport);
export const executionService = createClient(ExecutionService, transport);
export const registryService = createClient(FlowRegistryService, transport);

/** An RPC error as a line for people: its code and the server's message. */
export function describeError(error: unknown): string {
  if (error instanceof ConnectError) {
    return `${Code[error.code] ?? error.code}: ${error.rawMessage}`;
  }
  return error instanceof Error ? error.message : String(error);
}

/** True when `error` is the abort of a call this page cancelled itself. */
export function isAbort(error: unknown): boolean {
  return error instanceof ConnectError && error.code === Code.Canceled;
}

const BAD_REQUEST = "google.rpc.BadRequest";

/**
 * The field violations of an INVALID_ARGUMENT error (AIP-193's
 * `google.rpc.BadRequest` detail), as the ValidationIssues that Validate
 * reports; empty for any other error. google.rpc is not generated here, but a
 * `FieldViolation` numbers `field`, `description` and `reason` 1, 2 and 3, as
 * `ValidationIssue` does, so each decodes as one; BadRequest itself is read
 * with the wire reader (its field 1, repeated).
 */
export function fieldViolations(error: unknown): ValidationIssue[] {
  if (!(error instanceof ConnectError) || error.code !== Code.InvalidArgument) return [];
  const issues: ValidationIssue[] = [];
  for (const detail of error.details) {
    if (!("type" in detail) || detail.type !== BAD_REQUEST) continue;
    const reader = new BinaryReader(detail.value);
    while (reader.pos < reader.len) {
      const [number, wireType] = reader.tag();
      if (number === 1 && wireType === WireType.LengthDelimited) {
        issues.push(fromBinary(ValidationIssueSchema, reader.bytes()));
      } else {
        reader.skip(wireType);
      }
    }
  }
  return issues;
}

/**
 * A typed TypeScript client of Flow Manager, run against the real server by
 * tests/e2e/test_node_client.py:
 *
 *     node dist/src/client.js 127.0.0.1:PORT path/to/seed-flow.json [PROTOCOL]
 *
 * It makes four calls with the types generated from protos/ (protobuf-es)
 * over one of Connect's transports for Node, chosen by PROTOCOL: `grpc` (the
 * default: HTTP/2, the gRPC port), or, against the HTTP port
 * (`--http-address`, docs/http.md; tests/http/test_node_connect.py),
 * `connect` (the Connect protocol, JSON), `connect-binary` (Connect,
 * protobuf) or `grpc-web` (gRPC-Web, protobuf), all over HTTP/1.1:
 *
 * 1. `Execute` with the seed flow, parsed from the same JSON body grpcurl
 *    sends, and printing the response in the JSON mapping as well, so the
 *    mapping is checked both ways;
 * 2. `ExecuteStream` with the same flow, reading every event through the
 *    typed `event` oneof;
 * 3. `Execute` with an invalid flow, decoding the `google.rpc.ErrorInfo` and
 *    `google.rpc.BadRequest` details of the INVALID_ARGUMENT status;
 * 4. `Execute` with the slow flow (slow-flow.json beside the seed) and a
 *    deadline it cannot meet: DEADLINE_EXCEEDED with its `ErrorInfo`.
 *
 * Each call prints one line of JSON with what the client saw (enum values by
 * their protobuf names), for the Python test to assert on. Anything that does
 * not type-check fails `tsc`; anything unexpected at run time throws, and the
 * process exits 1 with the reason on stderr.
 */

import { readFileSync } from "node:fs";
import { pathToFileURL } from "node:url";

import { fromJson, toJson, type JsonValue } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import {
  Code,
  ConnectError,
  createClient,
  type Client,
  type Transport,
} from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";

import {
  Branch,
  type ExecuteResponse,
  ExecuteRequestSchema,
  ExecuteResponseSchema,
  ExecuteStreamRequestSchema,
  type ExecuteStreamResponse,
  ExecutionStatus,
  FlowService,
  TaskOutcome,
} from "../gen/flowmanager/v1/flow_service_pb.js";
import { BadRequestSchema, ErrorInfoSchema } from "../gen/google/rpc/error_details_pb.js";

/** Milliseconds each call may take, sent to the server as its gRPC deadline. */
const CALL_TIMEOUT_MS = 10_000;
/** The deadline of the slow flow's call: far shorter than the flow. */
const SHORT_TIMEOUT_MS = 300;

type FlowClient = Client<typeof FlowService>;

/** The README's invalid request: an unknown task type, a bad outcome, an unknown target. */
const INVALID_FLOW: JsonValue = {
  flow: {
    start_task: "fetch",
    tasks: [{ name: "fetch", type: "download" }],
    conditions: [{ source_task: "fetch", outcome: "ok", target_task_success: "store" }],
  },
};

/** The protobuf name of an enum value, as the JSON mapping writes it. */
function statusName(status: ExecutionStatus): string {
  return `EXECUTION_STATUS_${ExecutionStatus[status]}`;
}

function outcomeName(outcome: TaskOutcome): string {
  return `TASK_OUTCOME_${TaskOutcome[outcome]}`;
}

function branchName(branch: Branch): string {
  return `BRANCH_${Branch[branch]}`;
}

function check(condition: boolean, message: string): asserts condition {
  if (!condition) {
    throw new Error(message);
  }
}

/** What the Python test needs of a summary, the same for `Execute` and the stream's last event. */
function summarize(response: ExecuteResponse): Record<string, unknown> {
  check(response.startTime !== undefined, "the summary has no start_time");
  check(response.duration !== undefined, "the summary has no duration");
  return {
    flowId: response.flowId,
    executionId: response.executionId,
    status: statusName(response.status),
    executedTasks: response.executedTasks,
    failedTask: response.failedTask,
    // A google.protobuf.Timestamp, as a JavaScript Date (millisecond precision).
    startTime: timestampDate(response.startTime).toISOString(),
    taskResults: response.taskResults.map((result) => ({
      task: result.task,
      outcome: outcomeName(result.outcome),
      step: result.step,
      attempts: result.attempts,
      // A decision is a message field: undefined when no condition routed after the task.
      branch: result.decision === undefined ? null : branchName(result.decision.branch),
      nextTask: result.decision?.nextTask ?? null,
    })),
  };
}

async function execute(client: FlowClient, body: JsonValue): Promise<Record<string, unknown>> {
  const request = fromJson(ExecuteRequestSchema, body);
  const response = await client.execute(request, { timeoutMs: CALL_TIMEOUT_MS });
  // The whole response in the protobuf JSON mapping, for the test to compare
  // with the Python protobuf runtime's reading of it.
  return { call: "Execute", ...summarize(response), json: toJson(ExecuteResponseSchema, response) };
}

/** One line per event, typed through the `event` oneof: its case and what the test checks. */
function describeEvent(message: ExecuteStreamResponse): Record<string, unknown> {
  const event = message.event;
  const common = { sequence: Number(message.sequence), kind: event.case };
  switch (event.case) {
    case "executionStarted":
      return { ...common, flowId: event.value.flowId, startTask: event.value.startTask };
    case "taskStarted":
      return { ...common, task: event.value.task, type: event.value.type, step: event.value.step };
    case "taskFinished": {
      const result = event.value.result;
      check(result !== undefined, `task_finished #${message.sequence} has no result`);
      return { ...common, task: result.task, outcome: outcomeName(result.outcome) };
    }
    case "conditionEvaluated":
      return {
        ...common,
        condition: event.value.condition,
        branch: branchName(event.value.branch),
        nextTask: event.value.nextTask,
      };
    case "taskRetrying":
      return { ...common, task: event.value.task, attempt: event.value.attempt };
    case "executionFinished": {
      const result = event.value.result;
      check(result !== undefined, "execution_finished has no result");
      return { ...common, result: summarize(result) };
    }
    case undefined:
      throw new Error(`event #${message.sequence} has no event set`);
  }
}

async function executeStream(
  client: FlowClient,
  body: JsonValue,
): Promise<Record<string, unknown>> {
  const request = fromJson(ExecuteStreamRequestSchema, body);
  const events: Record<string, unknown>[] = [];
  const executionIds = new Set<string>();
  for await (const message of client.executeStream(request, { timeoutMs: CALL_TIMEOUT_MS })) {
    executionIds.add(message.executionId);
    check(message.time !== undefined, `event #${message.sequence} has no time`);
    events.push(describeEvent(message));
  }
  return { call: "ExecuteStream", executionIds: [...executionIds], events };
}

async function invalidExecute(client: FlowClient): Promise<Record<string, unknown>> {
  try {
    await client.execute(fromJson(ExecuteRequestSchema, INVALID_FLOW), {
      timeoutMs: CALL_TIMEOUT_MS,
    });
  } catch (error) {
    const failure = ConnectError.from(error);
    check(failure.code === Code.InvalidArgument, `expected INVALID_ARGUMENT: ${failure.message}`);
    const [info] = failure.findDetails(ErrorInfoSchema);
    const [badRequest] = failure.findDetails(BadRequestSchema);
    check(info !== undefined, "no google.rpc.ErrorInfo in the details");
    check(badRequest !== undefined, "no google.rpc.BadRequest in the details");
    return {
      call: "Execute (invalid flow)",
      code: Code[failure.code],
      message: failure.rawMessage,
      errorInfo: { reason: info.reason, domain: info.domain, metadata: info.metadata },
      fieldViolations: badRequest.fieldViolations.map((violation) => ({
        field: violation.field,
        reason: violation.reason,
        description: violation.description,
      })),
    };
  }
  throw new Error("Execute accepted an invalid flow");
}

async function missedDeadline(
  client: FlowClient,
  body: JsonValue,
): Promise<Record<string, unknown>> {
  try {
    await client.execute(fromJson(ExecuteRequestSchema, body), { timeoutMs: SHORT_TIMEOUT_MS });
  } catch (error) {
    const failure = ConnectError.from(error);
    const [info] = failure.findDetails(ErrorInfoSchema);
    return {
      call: "Execute (deadline)",
      code: Code[failure.code],
      // The server's ErrorInfo, or none when the client's own timer won the race.
      reason: info?.reason ?? null,
    };
  }
  throw new Error("the slow flow met a deadline it cannot meet");
}

/** The transport of `protocol` to `address` (host:port, or a URL for the HTTP port). */
function transportFor(protocol: string, address: string): Transport {
  const baseUrl = address.includes("://") ? address : `http://${address}`;
  switch (protocol) {
    case "grpc":
      return createGrpcTransport({ baseUrl });
    case "connect":
      return createConnectTransport({ baseUrl, httpVersion: "1.1" });
    case "connect-binary":
      return createConnectTransport({ baseUrl, httpVersion: "1.1", useBinaryFormat: true });
    case "grpc-web":
      return createGrpcWebTransport({ baseUrl, httpVersion: "1.1" });
    default:
      throw new Error(`unknown protocol ${protocol}: grpc, connect, connect-binary or grpc-web`);
  }
}

async function main(argv: string[]): Promise<void> {
  const [address, seedPath, protocol = "grpc"] = argv;
  if (address === undefined || seedPath === undefined) {
    throw new Error("usage: node dist/src/client.js HOST:PORT SEED_FLOW_JSON [PROTOCOL]");
  }
  const seed = JSON.parse(readFileSync(seedPath, "utf8")) as JsonValue;
  const slow = JSON.parse(
    readFileSync(new URL("slow-flow.json", pathToFileURL(seedPath)), "utf8"),
  ) as JsonValue;
  const client = createClient(FlowService, transportFor(protocol, address));

  for (const run of [
    () => execute(client, seed),
    () => executeStream(client, seed),
    () => invalidExecute(client),
    () => missedDeadline(client, slow),
  ]) {
    console.log(JSON.stringify(await run()));
  }
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
    process.exit(1);
  },
);

/**
 * A typed TypeScript worker of Flow Manager, run against the real server by
 * tests/e2e/test_task_workers.py:
 *
 *     node dist/src/worker.js 127.0.0.1:PORT QUEUE [NAME] [echo|hang]
 *
 * It opens `WorkerService.Work` with the types generated from protos/
 * (protobuf-es) over Connect's gRPC transport for Node, serves QUEUE with one
 * credit, and answers each assignment on the same stream with the output
 * `{worker: NAME, params, attempt}` (mode `echo`, the default), or never
 * answers (mode `hang`, for the cancellation tests). A cancellation aborts
 * the handler's AbortSignal. It prints one line per thing the test waits for: `READY` once
 * registered, `ASSIGNED <id>`, `CANCELLED <id>`, `REFUSED <id> <reason>`.
 * The stream ends when the server ends it; the process then exits 0.
 */

import { create, type JsonObject } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";

import {
  CancellationReason,
  type TaskAssignment,
  type WorkRequest,
  WorkRequestSchema,
  WorkerService,
} from "../gen/flowmanager/v1/worker_service_pb.js";

/** What a handler returns: the task's output. Throwing fails the task. */
type Handler = (assignment: TaskAssignment, signal: AbortSignal) => Promise<JsonObject>;

/** The requests of the stream: pushed by the worker, pulled by the transport. */
class Outbox implements AsyncIterable<WorkRequest> {
  private readonly queued: WorkRequest[] = [];
  private wake: (() => void) | undefined;

  push(request: WorkRequest): void {
    this.queued.push(request);
    this.wake?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<WorkRequest> {
    for (;;) {
      const next = this.queued.shift();
      if (next !== undefined) {
        yield next;
        continue;
      }
      await new Promise<void>((resolve) => {
        this.wake = resolve;
      });
    }
  }
}

/** Serves `queue` until the server ends the stream; each assignment goes to `handler`. */
async function serve(address: string, queue: string, name: string, handler: Handler): Promise<void> {
  const client = createClient(WorkerService, createGrpcTransport({ baseUrl: `http://${address}` }));
  const outbox = new Outbox();
  outbox.push(
    create(WorkRequestSchema, {
      kind: { case: "start", value: { queues: [queue], credits: 1, workerName: name } },
    }),
  );
  const running = new Map<string, AbortController>();
  for await (const response of client.work(outbox)) {
    switch (response.kind.case) {
      case "started":
        console.log("READY");
        break;
      case "assignment": {
        const assignment = response.kind.value;
        const controller = new AbortController();
        running.set(assignment.assignmentId, controller);
        console.log(`ASSIGNED ${assignment.assignmentId}`);
        void answer(assignment, handler, controller.signal, outbox).finally(() =>
          running.delete(assignment.assignmentId),
        );
        break;
      }
      case "cancellation": {
        const { assignmentId, reason } = response.kind.value;
        running.get(assignmentId)?.abort(CancellationReason[reason]);
        console.log(`CANCELLED ${assignmentId}`);
        break;
      }
      case "refused":
        console.log(`REFUSED ${response.kind.value.assignmentId} ${response.kind.value.reason}`);
        break;
      default:
        break;
    }
  }
}

/** Runs the handler and sends its answer, unless the assignment was cancelled. */
async function answer(
  assignment: TaskAssignment,
  handler: Handler,
  signal: AbortSignal,
  outbox: Outbox,
): Promise<void> {
  const assignmentId = assignment.assignmentId;
  try {
    const output = await handler(assignment, signal);
    if (!signal.aborted) {
      outbox.push(create(WorkRequestSchema, { kind: { case: "complete", value: { assignmentId, output } } }));
    }
  } catch (error) {
    if (!signal.aborted) {
      const message = error instanceof Error ? error.message : String(error);
      const errorType = error instanceof Error ? error.name : "Error";
      outbox.push(
        create(WorkRequestSchema, {
          kind: { case: "fail", value: { assignmentId, error: message, errorType } },
        }),
      );
    }
  }
}

async function main(argv: string[]): Promise<void> {
  const [address, queue, name = "ts-worker", mode = "echo"] = argv;
  if (address === undefined || queue === undefined) {
    throw new Error("usage: node dist/src/worker.js HOST:PORT QUEUE [NAME] [echo|hang]");
  }
  await serve(address, queue, name, async (assignment, signal) => {
    if (mode === "hang") {
      await new Promise<never>((_, reject) => {
        signal.addEventListener("abort", () => reject(new Error("cancelled")));
      });
    }
    const deadline = assignment.deadline ? timestampDate(assignment.deadline).toISOString() : null;
    return {
      worker: name,
      params: assignment.params ?? {},
      attempt: assignment.attempt,
      hasDeadline: deadline !== null,
    };
  });
}

main(process.argv.slice(2)).then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error instanceof Error ? (error.stack ?? error.message) : String(error));
    process.exit(1);
  },
);

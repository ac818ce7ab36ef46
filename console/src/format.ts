// How times, durations, statuses and JSON values read on screen.

import type { Duration, Timestamp } from "@bufbuild/protobuf/wkt";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { ExecutionStatus, TaskOutcome } from "./gen/flowmanager/v1/flow_service_pb";
import { ExecutionState } from "./gen/flowmanager/v1/execution_service_pb";

/** Milliseconds in a protobuf Duration (0 when unset). */
export function durationMs(duration: Duration | undefined): number {
  if (!duration) return 0;
  return Number(duration.seconds) * 1000 + duration.nanos / 1e6;
}

/** A duration for people: `850 ms`, `2.4 s`, `3 min 5 s`. */
export function formatMs(ms: number): string {
  if (ms <= 0) return "0 ms";
  if (ms < 1) return "<1 ms";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
  const minutes = Math.floor(ms / 60_000);
  return `${minutes} min ${Math.round((ms % 60_000) / 1000)} s`;
}

/** Milliseconds since the epoch of a Timestamp (0 when unset). */
export function timestampMs(time: Timestamp | undefined): number {
  return time ? timestampDate(time).getTime() : 0;
}

/** A timestamp in the reader's locale, with seconds. */
export function formatTime(time: Timestamp | undefined): string {
  if (!time) return "";
  return timestampDate(time).toLocaleString(undefined, { hour12: false });
}

/** COMPLETED, FAILED, ...: the enum value without its prefix. */
export function statusName(status: ExecutionStatus): string {
  return status === ExecutionStatus.UNSPECIFIED ? "" : ExecutionStatus[status];
}

/** RUNNING or FINISHED. */
export function stateName(state: ExecutionState): string {
  return state === ExecutionState.UNSPECIFIED ? "" : ExecutionState[state];
}

/** success or failure, as flows spell outcomes. */
export function outcomeName(outcome: TaskOutcome): string {
  return outcome === TaskOutcome.UNSPECIFIED ? "" : TaskOutcome[outcome].toLowerCase();
}

/** JSON, indented, for <pre> blocks. */
export function pretty(value: unknown): string {
  return JSON.stringify(value, null, 2);
}

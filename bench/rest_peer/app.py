"""The seed's Flow Manager: FastAPI, pydantic schemas, a sequential engine, mock tasks.

It follows the seed's README: `GET /health` answers `{"status": "ok"}`;
`POST /flow/execute` takes `{"flow": {...}}` (examples/seed-flow.json),
runs `start_task`, and after each task the task's condition (at most one
per source task) sends the flow to `target_task_success` when the outcome
is the expected one, else to `target_task_failure`; `end`, or a task
without a condition, ends the flow. A failed task stops it ("fail-fast").
The reply is `flow_id`, `status`, `executed_tasks` and `failed_task`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

__all__ = ["app"]

END = "end"


# schemas.py: what the request and the response look like.
class TaskSchema(BaseModel):
    name: str
    description: str = ""


class ConditionSchema(BaseModel):
    name: str
    source_task: str
    outcome: str
    target_task_success: str
    target_task_failure: str


class FlowSchema(BaseModel):
    id: str
    name: str = ""
    start_task: str
    tasks: list[TaskSchema]
    conditions: list[ConditionSchema] = []


class ExecuteRequest(BaseModel):
    flow: FlowSchema


class ExecuteResponse(BaseModel):
    flow_id: str
    status: str
    executed_tasks: list[str]
    failed_task: str | None


# models.py: the domain, free of FastAPI.
@dataclass(frozen=True, slots=True)
class Task:
    name: str
    description: str


@dataclass(frozen=True, slots=True)
class Condition:
    source_task: str
    outcome: str
    target_task_success: str
    target_task_failure: str


@dataclass(frozen=True, slots=True)
class Flow:
    id: str
    start_task: str
    tasks: dict[str, Task]
    conditions: dict[str, Condition]


@dataclass(frozen=True, slots=True)
class TaskResult:
    task: str
    outcome: str


# tasks.py: mock implementations (fetch, process, store), each a success.
async def _mock_task(task: Task) -> TaskResult:
    return TaskResult(task.name, "success")


TaskFunction = Callable[[Task], Awaitable[TaskResult]]


# engine.py: runs tasks one after another, routed by their conditions.
async def run_flow(flow: Flow, run_task: TaskFunction = _mock_task) -> ExecuteResponse:
    executed: list[str] = []
    current = flow.start_task
    steps = 0
    while current != END and steps <= len(flow.tasks):
        steps += 1
        result = await run_task(flow.tasks[current])
        executed.append(current)
        if result.outcome != "success":
            return ExecuteResponse(
                flow_id=flow.id, status="failed", executed_tasks=executed, failed_task=current
            )
        condition = flow.conditions.get(current)
        if condition is None:
            break
        current = (
            condition.target_task_success
            if result.outcome == condition.outcome
            else condition.target_task_failure
        )
    return ExecuteResponse(
        flow_id=flow.id, status="completed", executed_tasks=executed, failed_task=None
    )


# api.py: request -> domain -> engine -> response.
def _flow_of(schema: FlowSchema) -> Flow:
    tasks = {task.name: Task(task.name, task.description) for task in schema.tasks}
    targets = {schema.start_task}
    conditions = {}
    for condition in schema.conditions:
        conditions[condition.source_task] = Condition(
            condition.source_task,
            condition.outcome,
            condition.target_task_success,
            condition.target_task_failure,
        )
        targets |= {condition.source_task, condition.target_task_success}
        targets.add(condition.target_task_failure)
    unknown = sorted(targets - tasks.keys() - {END})
    if unknown:
        raise HTTPException(status_code=422, detail=f"unknown tasks: {unknown}")
    return Flow(schema.id, schema.start_task, tasks, conditions)


# main.py: the application, its routes and /health.
app = FastAPI(title="Flow Manager (seed design)")


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/flow/execute", response_model=ExecuteResponse)
async def execute(request: ExecuteRequest) -> ExecuteResponse:
    return await run_flow(_flow_of(request.flow))

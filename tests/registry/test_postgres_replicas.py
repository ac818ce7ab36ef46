"""Two real server processes on one PostgreSQL share the flow registry (docs/replicas.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
from google.protobuf import json_format

from flowmanager.v1 import execution_service_pb2 as history_pb
from flowmanager.v1 import (
    execution_service_pb2_grpc,
    flow_registry_service_pb2_grpc,
    flow_service_pb2,
    flow_service_pb2_grpc,
)
from flowmanager.v1 import flow_registry_service_pb2 as pb
from tests.api.test_execute import seed_body
from tests.server_process import serving

Registry = flow_registry_service_pb2_grpc.FlowRegistryServiceStub


def _create(flow: dict[str, Any]) -> pb.CreateFlowRequest:
    return json_format.ParseDict({"flow": flow}, pb.CreateFlowRequest())


async def test_a_flow_created_on_one_replica_is_read_numbered_and_run_on_the_other(
    postgres_url: str, tmp_path: Path
) -> None:
    flow = seed_body()["flow"]
    renamed = {**flow, "name": "second"}
    flags = ["--store", postgres_url]
    with serving(tmp_path / "a.log", flags) as one, serving(tmp_path / "b.log", flags) as other:
        async with (
            grpc.aio.insecure_channel(one.address) as to_one,
            grpc.aio.insecure_channel(other.address) as to_other,
        ):
            on_one, on_other = Registry(to_one), Registry(to_other)
            first = await on_one.CreateFlow(_create(flow))
            second = await on_one.CreateFlow(_create(renamed))

            got = await on_other.GetFlow(pb.GetFlowRequest(flow_id="flow123"))
            listed = await on_other.ListFlows(pb.ListFlowsRequest())
            repeated = await on_other.CreateFlow(_create(renamed))  # the latest: not stored again
            third = await on_other.CreateFlow(_create(flow))  # numbered after the other's

            ref = {"flow_ref": {"flow_id": "flow123", "version": 1}}
            request = json_format.ParseDict(ref, flow_service_pb2.ExecuteRequest())
            ran = await flow_service_pb2_grpc.FlowServiceStub(to_other).Execute(request)
            executions = execution_service_pb2_grpc.ExecutionServiceStub(to_one)
            recorded = await executions.ListExecutions(
                history_pb.ListExecutionsRequest(flow_id="flow123")
            )
            versions = await on_one.ListFlowVersions(pb.ListFlowVersionsRequest(flow_id="flow123"))

    assert (first.flow.version, second.flow.version) == (1, 2)
    assert (got.flow.version, got.flow.flow.name) == (2, "second")
    assert got.flow.digest == second.flow.digest
    assert [(f.flow_id, f.version) for f in listed.flows] == [("flow123", 2)]
    assert (repeated.flow.version, repeated.created) == (2, False)
    assert (third.flow.version, third.created) == (3, True)
    assert ran.status == flow_service_pb2.EXECUTION_STATUS_COMPLETED
    assert list(ran.executed_tasks) == ["task1", "task2", "task3"]
    assert [(e.execution_id, e.flow_version) for e in recorded.executions] == [
        (ran.execution_id, 1)
    ]
    assert [v.version for v in versions.versions] == [3, 2, 1]

"""The console and the flow registry: pick a version, run it by reference, save new ones.

The flows are created over gRPC on the server's gRPC port (the console's
module-scoped server, so ids differ from test to test) and read back over
gRPC to check what the console did. As in test_console.py, every assertion
on the page reads a data attribute: `#flow-origin[data-ref]` (the registry
version the editor holds) and `[data-modified]`, `#save-result[data-outcome]`
and `[data-version]`, `#run-flow-ref[data-ref]`, `[data-flow]` on an
execution's row and summary.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from playwright.sync_api import expect

from flowmanager.v1 import (
    execution_service_pb2,
    execution_service_pb2_grpc,
    flow_registry_service_pb2_grpc,
)
from flowmanager.v1 import flow_registry_service_pb2 as registry_pb
from tests.console.conftest import Console, example
from tests.http.conftest import HttpServer

TASK_NODES = ".node[data-kind=task]"
Registry = flow_registry_service_pb2_grpc.FlowRegistryServiceStub
PICKER_PAGE_SIZE = 10
"""Flows a page of the picker lists (console/src/picker.ts)."""


@pytest.fixture
def channel(console_server: HttpServer) -> Iterator[grpc.Channel]:
    """A gRPC channel to the console's server."""
    with grpc.insecure_channel(console_server.grpc.address) as opened:
        yield opened


def seed_flow(flow_id: str) -> dict[str, Any]:
    """The seed flow (examples/seed-flow.json) under `flow_id`."""
    flow: dict[str, Any] = json.loads(example("seed-flow.json"))["flow"]
    return {**flow, "id": flow_id}


def create_flow(channel: grpc.Channel, flow: dict[str, Any]) -> registry_pb.CreateFlowResponse:
    """CreateFlow over gRPC."""
    request = json_format.ParseDict({"flow": flow}, registry_pb.CreateFlowRequest())
    response: registry_pb.CreateFlowResponse = Registry(channel).CreateFlow(request)
    return response


def pick(console: Console, flow_id: str, version: int) -> None:
    """Opens the Flows page's registry picker and loads `flow_id`@`version` into the editor."""
    page = console.page
    console.open("/flows")
    page.locator("#registry summary").click()
    page.locator(f'#registry-flows tr[data-flow-id="{flow_id}"] .pick-flow').click()
    versions = page.locator(f'#registry-versions[data-flow-id="{flow_id}"]')
    expect(versions).to_have_attribute("data-state", "loaded")
    versions.locator(f'li[data-version="{version}"] .load-version').click()
    expect(page.locator("#flow-origin")).to_have_attribute("data-ref", f"{flow_id}@{version}")


def test_a_picked_version_is_drawn_and_runs_by_reference(
    console: Console, channel: grpc.Channel
) -> None:
    assert create_flow(channel, seed_flow("picked")).flow.version == 1
    changed = seed_flow("picked")
    changed["name"] = "The seed flow, renamed"
    assert create_flow(channel, changed).flow.version == 2

    pick(console, "picked", 1)
    page = console.page
    expect(page.locator("#registry-versions li")).to_have_count(2)  # newest first: 2, then 1
    expect(page.locator("#registry-versions li").first).to_have_attribute("data-version", "2")
    expect(page.locator("#flow-origin")).to_have_attribute("data-modified", "false")
    expect(page.locator("#flow-graph")).to_have_attribute("data-state", "drawn")
    expect(page.locator(f"#flow-graph {TASK_NODES}")).to_have_count(3)
    expect(page.locator(".issues")).to_have_attribute("data-valid", "true")
    console.screenshot("registry")

    page.locator("#to-run").click()
    expect(page.locator("#run-flow-ref")).to_have_attribute("data-ref", "picked@1")
    page.locator("#run").click()
    expect(page.locator("#run-status")).to_have_attribute("data-status", "COMPLETED")
    execution_id = page.locator(".execution-link").inner_text().split()[-1]
    stored = execution_service_pb2_grpc.ExecutionServiceStub(channel).GetExecution(
        execution_service_pb2.GetExecutionRequest(execution_id=execution_id)
    )
    assert stored.execution.flow_version == 1
    assert stored.execution.request.flow_ref.flow_id == "picked"

    page.locator(".execution-link").click()
    expect(page.locator("#execution-flow")).to_have_attribute("data-flow", "picked@1")
    expect(page.locator("#execution-summary")).to_have_attribute("data-status", "COMPLETED")
    page.locator("header nav a", has_text="Executions").click()
    row = page.locator(f'tr[data-execution-id="{execution_id}"]')
    expect(row).to_have_attribute("data-flow", "picked@1")

    # The execution's page links to the version it ran, which the Flows page loads.
    row.get_by_role("link").click()
    page.locator("#flow-version-link").click()
    expect(page).to_have_url(re.compile(r"/flows$"))
    expect(page.locator("#flow-origin")).to_have_attribute("data-ref", "picked@1")
    expect(page.locator(f"#flow-graph {TASK_NODES}")).to_have_count(3)


def test_saving_makes_a_new_version_only_when_the_flow_changed(
    console: Console, channel: grpc.Channel
) -> None:
    page = console.page
    flow = seed_flow("saved")
    console.paste_flow(json.dumps({"flow": flow}, indent=2))
    expect(page.locator("#flow-origin")).to_have_attribute("data-ref", "")
    saved = page.locator("#save-result")
    page.locator("#save-flow").click()
    expect(saved).to_have_attribute("data-outcome", "created")
    expect(saved).to_have_attribute("data-version", "1")
    expect(page.locator("#flow-origin")).to_have_attribute("data-ref", "saved@1")

    page.locator("#save-flow").click()
    expect(saved).to_have_attribute("data-outcome", "unchanged")
    expect(saved).to_have_attribute("data-version", "1")

    flow["tasks"][0]["description"] = "Fetches the data, described anew"
    console.paste_flow(json.dumps({"flow": flow}, indent=2))
    expect(page.locator("#flow-origin")).to_have_attribute("data-modified", "true")
    page.locator("#to-run").click()
    expect(page.locator("#run-flow-ref")).to_have_attribute("data-ref", "")  # modified: inline
    page.locator("header nav a", has_text="Flows").click()
    page.locator("#save-flow").click()
    expect(saved).to_have_attribute("data-outcome", "created")
    expect(saved).to_have_attribute("data-version", "2")
    expect(page.locator("#flow-origin")).to_have_attribute("data-ref", "saved@2")
    expect(page.locator("#flow-origin")).to_have_attribute("data-modified", "false")

    versions = Registry(channel).ListFlowVersions(
        registry_pb.ListFlowVersionsRequest(flow_id="saved")
    )
    assert [v.version for v in versions.versions] == [2, 1]
    assert versions.versions[0].flow_name == flow["name"]


def test_an_invalid_flow_is_not_saved_and_its_errors_are_pinned(
    console: Console, channel: grpc.Channel
) -> None:
    flow = seed_flow("orders/v2")  # the registry refuses '/' in an id; Validate does not
    flow["tasks"][1]["type"] = "no_such_type"
    console.open("/flows")
    page = console.page
    page.locator("#flow-editor").fill(json.dumps({"flow": flow}))
    expect(page.locator(".issues")).to_have_attribute("data-valid", "false")
    expect(page.locator('.issues li[data-field="flow.id"]')).to_have_count(0)

    page.locator("#save-flow").click()
    expect(page.locator("#save-result")).to_have_attribute("data-outcome", "invalid")
    expect(page.locator('.issues li[data-field="flow.id"]')).to_have_attribute(
        "data-reason", "INVALID_FLOW_ID"
    )
    expect(page.locator('.issues li[data-field="flow.tasks[1].type"]')).to_have_attribute(
        "data-reason", "UNKNOWN_TASK_TYPE"
    )
    expect(console.task("task2", "#flow-graph")).to_have_attribute("data-issues", "error")
    listed = Registry(channel).ListFlows(registry_pb.ListFlowsRequest())
    assert "orders/v2" not in [f.flow_id for f in listed.flows]


def test_the_picker_reads_the_registry_a_page_at_a_time(
    console: Console, channel: grpc.Channel
) -> None:
    for index in range(PICKER_PAGE_SIZE + 1):
        create_flow(channel, seed_flow(f"zz-paged-{index:02d}"))  # after every other id
    console.open("/flows")
    page = console.page
    page.locator("#registry summary").click()
    flows = page.locator("#registry-flows")
    expect(flows).to_have_attribute("data-state", "loaded")
    expect(flows.locator("tbody tr")).to_have_count(PICKER_PAGE_SIZE)
    while flows.locator(".next").is_enabled():  # to the last page, where the last id is
        page_number = flows.get_attribute("data-page")
        flows.locator(".next").click()
        expect(flows).not_to_have_attribute("data-page", page_number or "")
        expect(flows).to_have_attribute("data-state", "loaded")
    expect(flows.locator('tr[data-flow-id="zz-paged-10"]')).to_have_count(1)
    flows.locator(".previous").click()
    expect(flows).to_have_attribute("data-state", "loaded")
    expect(flows.locator("tbody tr")).to_have_count(PICKER_PAGE_SIZE)

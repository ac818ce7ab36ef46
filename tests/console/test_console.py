"""The web console in a real headless Chromium against a real server.

Every assertion reads DOM state the console sets for this purpose: task nodes
carry `data-state` (idle, running, retrying, succeeded, failed), edges
`data-taken`, a run or an execution `data-status`; never a timing. Playwright's
`expect` waits for each state up to a bound.
"""

from __future__ import annotations

import json
import re

from playwright.sync_api import expect

from tests.console.conftest import Console, example

TASK_NODES = ".node[data-kind=task]"
TASK_TO_TASK_EDGES = ".edge[data-source-kind=task][data-target-kind=task]"


def test_the_seed_flow_is_drawn_and_runs_green(console: Console) -> None:
    console.paste_flow(example("seed-flow.json"))
    page = console.page
    expect(page.locator(f"#flow-graph {TASK_NODES}")).to_have_count(3)
    expect(page.locator(f"#flow-graph {TASK_TO_TASK_EDGES}")).to_have_count(2)
    console.screenshot("flow")

    console.run("COMPLETED")
    for name in ("task1", "task2", "task3"):
        expect(console.task(name, "#run-graph")).to_have_attribute("data-state", "succeeded")
    taken = page.locator("#run-graph .edge[data-taken=true]")
    expect(taken).to_have_count(4)  # start, two conditions' success branches, task3 to end
    expect(page.locator("#run-graph .edge[data-taken=true][data-branch=failure]")).to_have_count(0)
    expect(page.locator(".decisions li[data-branch=success]")).to_have_count(2)
    console.screenshot("run")


def test_a_failing_flow_shows_the_red_node_and_the_failure_branch(console: Console) -> None:
    console.paste_flow(example("seed-failure.json"))
    console.run("FAILED")
    page = console.page
    expect(console.task("task1", "#run-graph")).to_have_attribute("data-state", "succeeded")
    expect(console.task("task2", "#run-graph")).to_have_attribute("data-state", "failed")
    expect(console.task("task3", "#run-graph")).to_have_attribute("data-state", "idle")
    # condition_task2 (index 1) took its failure branch, to the end.
    failure = page.locator('#run-graph .edge[data-key="condition:1:false"]')
    expect(failure).to_have_attribute("data-taken", "true")
    expect(failure).to_have_attribute("data-target-kind", "end")
    expect(page.locator('#run-graph .edge[data-key="condition:1:true"]')).to_have_attribute(
        "data-taken", "false"
    )
    expect(page.locator(".decisions li[data-branch=failure][data-value=false]")).to_have_count(1)
    console.screenshot("failure")


def test_an_execution_opens_from_the_list_and_by_its_deep_link(console: Console) -> None:
    console.paste_flow(example("seed-failure.json"))
    console.run("FAILED")
    page = console.page
    execution_id = page.locator(".execution-link").inner_text().split()[-1]

    page.locator("header nav a", has_text="Executions").click()
    row = page.locator(f'tr[data-execution-id="{execution_id}"]')
    expect(row).to_have_attribute("data-status", "FAILED")
    console.screenshot("executions")
    row.get_by_role("link").click()

    expect(page).to_have_url(re.compile(f"/executions/{execution_id}$"))
    for reload in (False, True):  # followed in the page, then loaded as a deep link
        if reload:
            page.reload()
        summary = page.locator("#execution-summary")
        expect(summary).to_have_attribute("data-status", "FAILED")
        expect(console.task("task2", "#execution-graph")).to_have_attribute("data-state", "failed")
        expect(page.locator(".gantt-row")).to_have_count(2)
        expect(page.locator(".gantt-row[data-task=task2]")).to_have_attribute(
            "data-outcome", "failure"
        )
        expect(page.locator(".events li")).to_have_count(8)
        expect(page.locator(".task-data details[data-task=task2]")).to_have_attribute(
            "data-outcome", "failure"
        )
        expect(page.locator("#cancel")).to_be_hidden()
    console.screenshot("execution")


def test_a_running_execution_is_cancelled_from_its_page(console: Console) -> None:
    slow = json.loads(example("slow-flow.json"))
    slow["flow"]["tasks"][0]["params"]["sleep_ms"] = 600_000  # runs until cancelled
    console.paste_flow(json.dumps(slow))
    page = console.page
    page.locator("#to-run").click()
    page.locator("#start").click()  # StartExecution, then the execution's page

    expect(page).to_have_url(re.compile(r"/executions/[^/]+$"))
    summary = page.locator("#execution-summary")
    expect(summary).to_have_attribute("data-state", "RUNNING")
    running = console.task("build_report", "#execution-graph")
    expect(running).to_have_attribute("data-state", "running")
    console.screenshot("running")
    page.locator("#cancel").click()

    expect(summary).to_have_attribute("data-status", "CANCELLED")
    expect(page.locator("#cancel")).to_be_hidden()
    expect(running).to_have_attribute("data-state", "cancelled")
    expect(console.task("send_report", "#execution-graph")).to_have_attribute("data-state", "idle")


def test_validation_issues_are_pinned_on_the_graph(console: Console) -> None:
    console.open("/flows")
    page = console.page
    page.locator("#flow-example").select_option("seed-flow.json")
    expect(page.locator(".issues")).to_have_attribute("data-valid", "true")
    broken = json.loads(example("seed-flow.json"))
    broken["flow"]["tasks"][1]["type"] = "no_such_type"
    broken["flow"]["conditions"][1]["target_task_failure"] = "nowhere"
    page.locator("#flow-editor").fill(json.dumps(broken, indent=2))

    expect(page.locator(".issues")).to_have_attribute("data-valid", "false")
    expect(console.task("task2", "#flow-graph")).to_have_attribute("data-issues", "error")
    failure_edge = page.locator('#flow-graph .edge[data-key="condition:1:false"]')
    expect(failure_edge).to_have_attribute("data-issues", "error")
    expect(failure_edge).to_have_attribute("data-target-kind", "missing")
    expect(page.locator('.issues li[data-field="flow.tasks[1].type"]')).to_have_count(1)
    page.locator('.issues li[data-field="flow.conditions[1].target_task_failure"] button').click()
    expect(failure_edge).to_be_focused()
    console.screenshot("issues")


def test_the_console_works_from_the_keyboard(console: Console) -> None:
    console.paste_flow(example("seed-flow.json"))
    page = console.page
    page.locator("#flow-editor").focus()
    for _ in range(30):  # Tab from the editor to the first task of the graph
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset?.task") == "task1":
            break
    expect(console.task("task1", "#flow-graph")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator(".node-details h3")).to_have_text("Task task1")

    page.locator("#to-run").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#run")).to_be_visible()
    page.locator("#run").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#run-status")).to_have_attribute("data-status", "COMPLETED")


def test_the_console_fits_a_phone(console: Console) -> None:
    page = console.page
    page.set_viewport_size({"width": 390, "height": 844})
    console.paste_flow(example("seed-flow.json"))
    expect(page.locator(f"#flow-graph {TASK_NODES}")).to_have_count(3)
    wider = "document.documentElement.scrollWidth > window.innerWidth"
    assert not page.evaluate(wider)
    console.screenshot("phone")

    console.run("COMPLETED")
    assert not page.evaluate(wider)
    page.locator(".execution-link").click()
    expect(page.locator("#execution-summary")).to_have_attribute("data-status", "COMPLETED")
    assert not page.evaluate(wider)
    page.locator("header nav a", has_text="Executions").click()
    expect(page.locator("#executions")).to_have_attribute("data-state", "loaded")
    assert not page.evaluate(wider)


def test_retries_and_stubs_show_on_the_nodes(console: Console) -> None:
    console.paste_flow(example("retry-flow.json"))
    console.run("COMPLETED")
    page = console.page
    expect(page.locator(".events li[data-event=taskRetrying]")).to_have_count(2)
    fetch = console.task("fetch", "#run-graph")
    expect(fetch).to_have_attribute("data-state", "succeeded")
    expect(fetch.locator(".node-note")).to_contain_text("3 attempts")

    # A what-if run of the seed flow: task2's failure stubbed from the Run page.
    console.paste_flow(example("seed-flow.json"))
    page.locator("#to-run").click()
    page.locator("#run-stubs").fill('{"task2": {"outcome": "TASK_OUTCOME_FAILURE", "error": "no"}}')
    page.locator("#run").click()
    expect(page.locator("#run-status")).to_have_attribute("data-status", "FAILED")
    expect(console.task("task2", "#run-graph")).to_have_attribute("data-state", "failed")
    expect(console.task("task3", "#run-graph")).to_have_attribute("data-state", "idle")


def test_the_history_filters_by_status_and_flow_and_pages(console: Console) -> None:
    console.paste_flow(example("seed-failure.json"))
    console.run("FAILED")
    console.paste_flow(example("seed-flow.json"))
    console.run("COMPLETED")
    page = console.page
    rows = page.locator("#executions tbody tr")

    console.open("/executions")
    page.get_by_label("Status").select_option("FAILED")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"/executions\?status=FAILED$"))
    expect(page.locator("#executions")).to_have_attribute("data-state", "loaded")
    expect(rows.first).to_have_attribute("data-status", "FAILED")
    expect(page.locator("#executions tbody tr:not([data-status=FAILED])")).to_have_count(0)

    console.open("/executions?flow=no-such-flow")
    expect(page.locator("#executions")).to_have_attribute("data-state", "loaded")
    expect(rows).to_have_count(0)

    console.open("/executions?size=1")  # one a page: the newest, then the one before
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-status", "COMPLETED")
    page.locator("#next").click()
    expect(page.locator("#page-number")).to_have_attribute("data-page", "2")
    expect(rows.first).to_have_attribute("data-status", "FAILED")
    page.locator("#previous").click()
    expect(page.locator("#page-number")).to_have_attribute("data-page", "1")
    expect(rows.first).to_have_attribute("data-status", "COMPLETED")

"""What `flowservice` offers its users, exactly (as httpx's tests/test_exported_members.py)."""

import subprocess
import sys

import flowservice

EXPECTED = [
    "Condition",
    "Engine",
    "ExecutionStatus",
    "ExecutionSummary",
    "FakeTask",
    "Flow",
    "FlowClient",
    "FlowClientError",
    "FlowServiceError",
    "InvalidFlowError",
    "Limits",
    "RetryPolicy",
    "Settings",
    "Task",
    "TaskContext",
    "TaskFailure",
    "TaskImplementation",
    "TaskOutcome",
    "TaskOutput",
    "TaskRegistrationError",
    "TaskRegistry",
    "TaskResult",
    "TaskStub",
    "TooManyExecutionsError",
    "ValidationReport",
    "WorkItem",
    "Worker",
    "builtin_registry",
    "create_server",
]


def test_all_lists_exactly_the_public_names_sorted() -> None:
    assert flowservice.__all__ == EXPECTED


def test_every_exported_name_resolves_to_its_definition() -> None:
    for name in flowservice.__all__:
        member = getattr(flowservice, name)
        if hasattr(member, "__name__"):
            assert member.__name__ == name, name
        assert name in dir(flowservice)


def test_an_unknown_name_is_an_attribute_error() -> None:
    try:
        flowservice.Plan  # type: ignore[attr-defined]  # noqa: B018
    except AttributeError:
        return
    raise AssertionError("flowservice.Plan resolved")


def test_the_engine_does_not_advertise_its_internals() -> None:
    import flowservice.engine

    assert flowservice.engine.__all__ == ["CANCELLED", "Engine", "Resumption", "ValidationReport"]


def test_running_flows_in_process_does_not_import_grpc() -> None:
    code = (
        "import sys\n"
        "from flowservice import Engine, Flow, Task, TaskRegistry, builtin_registry\n"
        "assert 'grpc' not in sys.modules, 'grpc imported'\n"
        "from flowservice import FlowClient\n"
        "assert 'grpc' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)

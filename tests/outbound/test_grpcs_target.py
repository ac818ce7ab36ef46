"""A `grpcs://` named target: called over TLS, its certificate checked against --outbound-ca."""

from __future__ import annotations

from pathlib import Path

from flowservice import Engine, Flow, Limits, Task
from flowservice.api.grpc_task import GrpcTask
from flowservice.outbound import OutboundPolicy
from flowservice.security import SecuritySettings
from flowservice.server import create_server
from flowservice.settings import Settings
from flowservice.tasks import TaskRegistry
from tests.security.pki import Pki

FLOW = {"id": "inner", "name": "inner", "start_task": "a", "tasks": [{"name": "a"}]}


async def _validate(port: int, roots: bytes) -> tuple[object, str]:
    policy = OutboundPolicy.parse([], [f"fm=grpcs://localhost:{port}"])
    engine = Engine(TaskRegistry({"grpc": GrpcTask(policy, Limits(), root_certificates=roots)}))
    params = {
        "target": "fm",
        "method": "flowmanager.v1.FlowService/Validate",
        "request": {"flow": FLOW},
    }
    flow = Flow(id="f", name="f", start_task="t", tasks=(Task("t", "grpc", params=params),))
    try:
        result = (await engine.execute(flow)).task_results[0]
    finally:
        await engine.aclose()
    return result.output.get("valid"), result.error_type


async def test_the_target_certificate_is_checked_against_the_outbound_ca(tmp_path: Path) -> None:
    pki = Pki.create(tmp_path)
    security = SecuritySettings(tls_cert=str(pki.server.cert), tls_key=str(pki.server.key))
    server = create_server(Settings(store="memory", address="127.0.0.1:0", security=security))
    await server.start()
    try:
        trusted = await _validate(server.port, pki.ca.path.read_bytes())
        untrusted = await _validate(server.port, pki.rogue_ca_pem())
    finally:
        await server.stop(grace=None)

    assert trusted == (True, "")
    assert untrusted == (None, "grpc.UNAVAILABLE")

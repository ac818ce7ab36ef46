"""docs/kubernetes.md's manifests parse, and give the server only flags and variables it has."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml

from flowservice.settings import Settings
from tests.e2e.conftest import REPO_ROOT


def _manifests() -> list[dict[str, Any]]:
    text = (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return [doc for block in blocks for doc in yaml.safe_load_all(block) if doc]


def _server_containers(manifests: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for manifest in manifests:
        template = manifest.get("spec", {}).get("template", {})
        for container in template.get("spec", {}).get("containers", []):
            if "flowservice" in container.get("command", []):
                yield container


def test_every_server_flag_and_variable_in_the_manifests_exists() -> None:
    known = Settings.variables()
    containers = list(_server_containers(_manifests()))

    flags = {arg.split("=")[0] for c in containers for arg in c.get("args", [])}
    variables = {e["name"] for c in containers for e in c.get("env", [])}

    assert len(containers) == 2  # one process per pod; replicas on PostgreSQL
    assert flags - set(known) == set()
    assert {v for v in variables if v.startswith("FLOWMANAGER_")} - set(known.values()) == set()


def test_the_replicas_share_the_postgresql_that_the_manifest_runs() -> None:
    manifests = _manifests()
    by_kind = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    store = by_kind[("Secret", "flowmanager-db")]["stringData"]["store"]
    replicated = by_kind[("Deployment", "flowmanager")]

    assert store.startswith("postgresql://")
    assert f"@{by_kind[('Service', 'flowmanager-db')]['metadata']['name']}:5432/" in store
    assert replicated["spec"]["replicas"] > 1
    assert "--lease-seconds=6" in replicated["spec"]["template"]["spec"]["containers"][0]["args"]

"""The KubeRay manifests stay in step with the code: Ray version, secrets, entrypoint."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def load(name: str) -> dict:
    return yaml.safe_load((DEPLOY / "kuberay" / name).read_text())


def test_ray_versions_match_the_installed_ray():
    ray_version = version("ray")
    cluster = load("raycluster.yaml")
    job = load("rayjob.yaml")
    assert cluster["spec"]["rayVersion"] == ray_version
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray_version
    assert f"rayproject/ray:{ray_version}-py311" in (DEPLOY / "Dockerfile").read_text()


def test_token_comes_from_a_secret_never_inline():
    for name in ("raycluster.yaml", "rayjob.yaml"):
        text = (DEPLOY / "kuberay" / name).read_text()
        doc = yaml.safe_load(text)
        spec = doc["spec"].get("rayClusterSpec", doc["spec"])
        env = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
        token = next(e for e in env if e["name"] == "SYNAPSE_ACCESS_TOKEN")
        assert "value" not in token and token["valueFrom"]["secretKeyRef"]["name"] == "synapse-backend"
        assert "runtimeEnvYAML" not in doc["spec"]


def test_rayjob_entrypoint_names_an_existing_action():
    from synapse_ray import load_action

    entry = load("rayjob.yaml")["spec"]["entrypoint"].split()
    assert entry[:2] == ["synapse-ray", "run"] and "--executor" in entry
    target = entry[2]
    path, _, cls = target.partition(":")
    repo = DEPLOY.parent
    assert load_action(f"{repo / path}:{cls}").__name__ == cls

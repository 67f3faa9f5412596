"""The KubeRay manifests stay in step with the code: Ray version, secrets, entrypoint."""

from __future__ import annotations

import json
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


def test_rayjob_entrypoint_is_ours_with_an_existing_action_and_valid_params():
    import shlex

    from synapse_ray import load_action
    from synapse_ray.entrypoint import build_parser

    entry = shlex.split(load("rayjob.yaml")["spec"]["entrypoint"])
    assert entry[:3] == ["python", "-m", "synapse_ray.entrypoint"]
    args = build_parser().parse_args(entry[3:])  # the entrypoint accepts exactly these arguments
    assert args.command == "run" and args.package is None and args.mode in ("auto", "task", "actors")
    path, _, cls = args.target.partition(":")
    repo = DEPLOY.parent
    action = load_action(f"{repo / path}:{cls}")
    assert action.__name__ == cls
    action.validate_params(json.loads(args.params))  # the params in the manifest validate


def test_secrets_stay_out_of_the_rayjob_entrypoint():
    text = load("rayjob.yaml")["spec"]["entrypoint"]
    assert "TOKEN" not in text.upper() and "SYNAPSE_ACCESS" not in text

"""Data between steps on two nodes of a real ray.cluster_utils.Cluster.

Each node has its own scratch root (``TMPDIR`` of its raylet and workers), so
a plain path written on one node does not resolve on the other. Spilling is
off and the disk threshold is zero, so a value larger than a node's object
store fails at once instead of spilling (the object-store-full case).
Ordered last by conftest: the shared session instance is shut down first.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from synapse_ray import BackendClient, StepError, StepResources
from synapse_ray.errors import ValueTransferError
from synapse_ray.executors.ray.executor import RayExecutor
from synapse_ray.targets import load_action
from tests.conftest import REPO
from tests.ray.data_actions import DataAction

pytestmark = [pytest.mark.cluster, pytest.mark.ray]

MIB = 1 << 20
STORE = 80 * MIB  # per node


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    roots = {name: tmp_path_factory.mktemp(f"scratch_{name}") for name in ("a", "b")}
    c = Cluster(
        initialize_head=True,
        head_node_args={
            "num_cpus": 1,
            "include_dashboard": False,
            "_system_config": {
                "automatic_object_spilling_enabled": False,
                "local_fs_capacity_threshold": 0.0,
            },
        },
    )
    nodes = {
        name: c.add_node(
            num_cpus=2,
            resources={f"node_{name}": 1},
            object_store_memory=STORE,
            env_vars={"TMPDIR": str(root)},
        )
        for name, root in roots.items()
    }
    c.wait_for_nodes()
    ray.init(address=c.address, namespace="synapse_ray")
    yield {name: n.node_id for name, n in nodes.items()}, roots
    ray.shutdown()
    c.shutdown()


@pytest.mark.parametrize("reuse", [False, True], ids=["actor-per-step", "reuse"])
def test_array_and_artifact_follow_steps_to_another_node(two_nodes, reuse):
    node_ids, roots = two_nodes
    params = {"mib": 16, "make_on": {"node_a": 1}, "read_on": {"node_b": 1}, "wipe_source": True}
    result = RayExecutor(reuse_actors=reuse).execute(DataAction, params)
    make, wipe, *readers = result["seen"]
    assert make["node"] == wipe["node"] == node_ids["a"]
    assert make["artifact_path"].startswith(str(roots["a"]))
    expected = float(np.arange(16 << 17, dtype=np.float64).sum())
    for seen in readers:
        assert seen["node"] == node_ids["b"]
        assert seen["type"] == "ndarray" and seen["sum"] == expected and seen["writeable"] is False
        # node a's files are gone: node b reads its own copy, under its own scratch root
        assert seen["plain_path_exists"] is False
        assert seen["artifact_path"].startswith(str(roots["b"]))
        assert seen["weights_ok"] and seen["info"] == f"made on {node_ids['a']}"
    assert result["driver_holds"] == "StoredValue"


def test_value_larger_than_the_object_store_fails_naming_step_and_size(two_nodes):
    started = time.monotonic()
    params = {"mib": 120, "make_on": {"node_a": 1}, "readers": 1, "artifact": False}
    with pytest.raises(StepError) as info:
        RayExecutor(reuse_actors=False).execute(DataAction, params)
    assert time.monotonic() - started < 60  # an error, not a hang
    cause = info.value.__cause__
    assert isinstance(cause, ValueTransferError)
    assert (cause.step, cause.attribute) == ("make", "dataset") and cause.nbytes >= 120 * MIB
    assert "Step 'make': context value 'dataset' (120.0 MiB) does not fit in Ray's object store" in str(cause)


def test_example_uploads_a_checkpoint_trained_on_another_node(two_nodes, digits_backend, tmp_path):
    """The example's train -> upload handoff with the two steps forced onto different nodes."""
    import sys
    import zipfile

    from ray import cloudpickle

    server, dataset_id = digits_backend
    example = load_action(str(REPO / "examples/train_steps.py") + ":DigitsStepTrainAction")
    cloudpickle.register_pickle_by_value(sys.modules[example.__module__])  # its steps travel by value

    class PinnedDigits(example):  # type: ignore[misc, valid-type]
        def setup_steps(self, registry):
            super().setup_steps(registry)
            for step in registry.get_steps():
                node = "node_b" if step.name == "upload_model" else "node_a"
                step.resources = StepResources(resources={node: 1})

    result = RayExecutor(backend=server.spec, reuse_actors=False).execute(
        PinnedDigits, {"dataset_id": dataset_id, "epochs": 2}
    )
    assert result["success"] and result["steps_executed"] == 4  # load, preprocess, train, upload
    with BackendClient(server.spec) as client:
        path = client.download_model(result["model_id"], tmp_path)
    with zipfile.ZipFile(path) as zf:
        assert sorted(n.rsplit("/", 1)[-1] for n in zf.namelist() if not n.endswith("/")) == [
            "metrics.txt",
            "model.pkl",
        ]

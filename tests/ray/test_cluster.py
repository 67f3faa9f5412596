"""Multi-node behaviour on a real ray.cluster_utils.Cluster (head + 2 nodes).

Ordered last by conftest: the shared session instance is shut down first.
"""

from __future__ import annotations

import pytest

from synapse_ray import RunStatus, StepStatus
from synapse_ray.executors.ray.executor import RayExecutor
from tests import shard_actions
from tests.ray.actions import StepRayAction, read_notes
from tests.ray.conftest import alive_actors, wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.ray]


@pytest.fixture(scope="module")
def cluster():
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": True})
    node_a = c.add_node(num_cpus=2, resources={"trainer": 1, "node_a": 1})
    node_b = c.add_node(num_cpus=2, resources={"trainer": 1, "node_b": 1})
    c.wait_for_nodes()
    ray.init(address=c.address, namespace="synapse_ray")
    yield c, {"a": node_a, "b": node_b}
    ray.shutdown()
    c.shutdown()


def test_step_pinned_by_resources_runs_on_that_node(cluster, tmp_path):
    c, nodes = cluster
    log = str(tmp_path / "log")
    result = RayExecutor(reuse_actors=False).execute(StepRayAction, {"log": log, "pin": {"node_b": 1}})
    assert result["success"]
    train = [n for n in read_notes(log) if n["step"] == "train"]
    assert [n["node"] for n in train] == [nodes["b"].node_id]


def test_shards_land_on_both_worker_nodes(cluster, tmp_path):
    """Runs before the test that removes a node (file order)."""
    c, nodes = cluster
    log = str(tmp_path / "shards")
    handle = RayExecutor().submit(shard_actions.ShardAction, {"n": 24, "sleep_s": 1.5, "log": log})
    out = handle.result(timeout=180)
    assert [r["x"] for r in out["results"]] == list(range(24))
    ran_on = {n["node"] for n in shard_actions.read_notes(log) if n["event"] == "end"}
    assert {nodes["a"].node_id, nodes["b"].node_id} <= ran_on
    counts = handle.progress().shards["shards"]
    assert (counts.done, counts.failed, counts.percent) == (24, 0, 100.0)


def test_removing_the_node_mid_step_reruns_the_step_elsewhere(cluster, tmp_path):
    c, nodes = cluster
    log = str(tmp_path / "log")
    handle = RayExecutor(reuse_actors=False, max_retries=1).submit(
        StepRayAction, {"log": log, "pin": {"trainer": 1}, "slow_train_s": 4.0}
    )
    first = wait_until(lambda: [n for n in read_notes(log) if n["step"] == "train"], timeout=60)[0]
    victim = next(node for node in nodes.values() if node.node_id == first["node"])
    # let some progress arrive from the doomed attempt, then take its node away
    wait_until(lambda: getattr(handle.progress().steps.get("train"), "percent", 0) > 5, timeout=30)
    before = handle.progress().overall
    c.remove_node(victim)
    result = handle.result(timeout=180)
    assert result["success"] and handle.status() is RunStatus.SUCCEEDED
    train = [n for n in read_notes(log) if n["step"] == "train"]
    assert [n["attempt"] for n in train] == [1, 2]
    assert train[1]["node"] != victim.node_id
    snap = handle.progress()
    assert snap.steps["train"].attempt == 2 and snap.steps["train"].status is StepStatus.SUCCEEDED
    assert snap.overall == 100.0 and before > 0
    wait_until(lambda: not alive_actors("StepWorker"), timeout=30)

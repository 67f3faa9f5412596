"""The job log sender run by the single writer: bounded, batched, never blocking."""

from __future__ import annotations

import pickle
import time

from synapse_ray import BackendSpec, RuntimeContext
from synapse_ray.runtime.job_logs import JobLogBatcher
from tests.compat.conftest import job_logs, new_job


def entry(i: int, **extra) -> dict:
    return {
        "event": "tick",
        "data": {"i": i},
        "datetime": "2026-01-01T00:00:00+00:00",
        "level": "info",
        **extra,
    }


def test_a_full_queue_drops_the_oldest_counts_them_and_reports_it(backend):
    job_id = new_job(backend["spec"])
    batcher = JobLogBatcher(backend["spec"], job_id, max_queue=10, batch=4, interval=0.05)
    batcher.offer([entry(i) for i in range(30)])  # one call: 20 over the bound before any send
    assert batcher.close(timeout=20) is True
    logs = job_logs(backend["spec"], job_id)
    ticks = [e["data"]["i"] for e in logs if e["event"] == "tick"]
    assert ticks == list(range(20, 30)) and batcher.dropped == 20 and batcher.sent == 11
    report = [e for e in logs if e["event"] == "logs_dropped"]
    assert report == [report[0]] and report[0]["data"] == {"dropped": 20} and report[0]["level"] == "warning"
    assert all(e["job"] == str(job_id) for e in logs)


def test_an_entry_with_a_file_goes_alone_and_order_is_kept(backend):
    job_id = new_job(backend["spec"])
    batcher = JobLogBatcher(backend["spec"], job_id, batch=100, interval=0.05)
    batcher.offer([entry(0), entry(1, file="data:text/plain;base64,aGk="), entry(2)])
    assert batcher.close(timeout=20)
    logs = job_logs(backend["spec"], job_id)
    assert [e["data"]["i"] for e in logs] == [0, 1, 2] and logs[1]["file"] == "data:text/plain;base64,aGk="


def test_a_dead_backend_never_blocks_the_caller_and_failures_are_counted():
    spec = BackendSpec(
        base_url="http://127.0.0.1:9/", token="t0k3n-never-sent", max_retries=0, connect_timeout=0.5
    )
    batcher = JobLogBatcher(spec, 1, interval=0.01)
    started = time.monotonic()
    for i in range(500):
        batcher.offer([entry(i)])
    assert time.monotonic() - started < 1.0  # queued, not sent inline
    assert batcher.close(timeout=30)
    assert batcher.sent == 0 and batcher.failed == 500


def test_runtime_context_carries_the_checkpoint_across_pickling():
    rt = RuntimeContext(
        checkpoint={"category": "base", "path": "/m", "id": 3, "name": "n"}, strict_result=True
    )
    copy = pickle.loads(pickle.dumps(rt))
    assert copy.checkpoint == rt.checkpoint and copy.strict_result is True


def test_upstream_marker_names_resolve():
    from synapse_ray import LogLevel, PluginCategory, RunMethod
    from synapse_ray.types import COCODataset, Dataset, ModelWeights, YOLODataset

    assert (
        PluginCategory.NEURAL_NET == "neural_net" and RunMethod.JOB == "job" and LogLevel.WARNING == "warning"
    )
    assert YOLODataset.is_compatible_with(Dataset) and not YOLODataset.is_compatible_with(COCODataset)
    assert ModelWeights.format == "weights"

"""Where the time of a 64-shard fan-out goes: per-shard timelines from inside the workers.

    .venv/bin/python bench/shards_timeline.py [--rounds 2] [--shards 64] [--work-ms 200]
        [--worker-soft-limit N]

``bench/shards.py`` gives wall times; on a shared 2-core machine they swing
by 30 % between rounds, so they cannot tell a scheduling fault of ours from
the load. This records, for every shard, the worker's pid and its start and
end (wall clock, taken in the worker) and, for ours, when the mapper submitted
it. Per arm it prints:

- idle slot-seconds: over the fan-out's span, the CPU slots with no shard running;
- the median and p90 gap between one shard's end and the next start on a worker;
- stalls: a worker that finished a shard before the mapper had submitted its next
  one (nothing was queued at the owner); a too-small in-flight bound shows here;
- shard CPU / wall: below 1, the shards themselves were slowed by other processes;
- the owner's CPU time (the driver, or the task that submits);
- new workers: shard worker pids no earlier fan-out of the run used, i.e. worker
  processes Ray started for this one (worker churn: an owner inside a task holds
  a worker itself, one more than Ray keeps idle by default).

Arms: raw ``ray.get([f.remote(s) ...])`` from the driver and from inside a task,
ours (``map_shards``) inside a plain task and inside a task-mode action step.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pydantic import BaseModel  # noqa: E402

from bench.prelude import precompile  # noqa: E402  (sets Ray's environment; ray is imported in main)
from synapse_ray import BaseTrainAction, RayExecutor, RuntimeContext, map_shards  # noqa: E402
from synapse_ray.executors.ray import shards as ray_shards  # noqa: E402

Trace = tuple[int, float, float, float, int]  # pid, start, end, CPU seconds, index


def burn(loops: int) -> int:
    acc = 0
    for i in range(loops):
        acc += i * i % 7
    return acc


def traced(shard: tuple[int, int]) -> Trace:
    loops, index = shard
    started, cpu = time.time(), time.process_time()
    burn(loops)
    return os.getpid(), started, time.time(), time.process_time() - cpu, index


class _TimedSession(ray_shards.RayShardSession):
    """The Ray session, noting when each shard is submitted (to find stalls)."""

    submitted: dict[int, float]

    def submit(self, task: Any) -> None:
        self.submitted[task.index] = time.time()
        super().submit(task)


class _TimedRunner(ray_shards.RayShardRunner):
    """Built where the mapper runs, so ``submitted`` is filled in that process."""

    def __init__(self) -> None:
        super().__init__()
        self.submitted: dict[int, float] = {}

    def open(self, job: Any) -> _TimedSession:
        session = _TimedSession(job, self.crash_retries)
        session.submitted = self.submitted
        return session


def _ours(target: Any, runner: _TimedRunner, shards: list[tuple[int, int]]) -> dict[str, Any]:
    cpu = time.process_time()
    out = list(map_shards(target, traced, shards))
    return {"out": out, "submitted": dict(runner.submitted), "owner_cpu": time.process_time() - cpu}


def raw_in_task(shards: list[tuple[int, int]]) -> dict[str, Any]:
    import ray

    remote = ray.remote(traced)
    cpu = time.process_time()
    out = ray.get([remote.remote(s) for s in shards])
    return {"out": out, "submitted": {}, "owner_cpu": time.process_time() - cpu}


def ours_in_task(shards: list[tuple[int, int]]) -> dict[str, Any]:
    runner = _TimedRunner()
    return _ours(RuntimeContext(shard_runner=runner), runner, shards)


class Params(BaseModel):
    shards: list[tuple[int, int]]


class TimelineStep(BaseTrainAction[Params]):
    action_name = "bench_shards_timeline"

    def execute(self) -> dict[str, Any]:
        runner = self.runtime_ctx.shard_runner = _TimedRunner()
        return _ours(self, runner, self.params.shards)


def report(name: str, wall: float, res: dict[str, Any], cpus: int, seen: set[int]) -> None:
    """One line per fan-out; ``seen``: the worker pids of every fan-out before (updated)."""
    out: list[Trace] = res["out"]
    pids = {t[0] for t in out}
    started, _ = len(pids - seen), seen.update(pids)
    edges = sorted([(t[1], 1) for t in out] + [(t[2], -1) for t in out])
    running, last, idle = 0, edges[0][0], 0.0
    for at, step in edges:
        idle += (at - last) * max(0, cpus - running)
        running, last = running + step, at
    per_worker: dict[int, list[Trace]] = {}
    for t in out:
        per_worker.setdefault(t[0], []).append(t)
    gaps, stalls = [], 0
    for runs in per_worker.values():
        runs.sort(key=lambda t: t[1])
        for before, after in zip(runs, runs[1:], strict=False):
            gaps.append(after[1] - before[2])
            stalls += res["submitted"].get(after[4], 0.0) > before[2]
    gaps.sort()
    busy = sum(t[2] - t[1] for t in out)
    median = 1000 * statistics.median(gaps)
    print(
        f"  {name:13s} wall {wall:6.2f} s  idle slot-s {idle:5.2f}  gap median {median:5.1f} ms "
        f"p90 {1000 * gaps[int(0.9 * len(gaps))]:6.1f} ms  stalls {stalls if res['submitted'] else '-':>2}  "
        f"shard CPU/wall {sum(t[3] for t in out) / busy:.2f}  owner CPU {res['owner_cpu']:.2f} s  "
        f"new workers {started}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--work-ms", type=float, default=200.0)
    parser.add_argument("--worker-soft-limit", type=int, help="Ray's num_workers_soft_limit (default: CPUs)")
    args = parser.parse_args()
    if args.worker_soft_limit is not None:  # read by the raylet ray.init starts below
        os.environ["RAY_num_workers_soft_limit"] = str(args.worker_soft_limit)

    import ray

    loops = 200_000
    while True:
        started = time.process_time()
        burn(loops)
        took = (time.process_time() - started) * 1000
        if took > 50:
            break
        loops *= 2
    loops = int(loops * args.work_ms / took)
    print(precompile())
    ray.init(address="local", num_cpus=2, include_dashboard=False, logging_level="ERROR")
    cpus = int(ray.cluster_resources()["CPU"])
    shards = [(loops, i) for i in range(args.shards)]
    remote = ray.remote(traced)
    remote_raw, remote_ours = ray.remote(raw_in_task), ray.remote(ours_in_task)
    executor = RayExecutor(mode="task")

    def raw() -> dict[str, Any]:
        cpu = time.process_time()
        out = ray.get([remote.remote(s) for s in shards])
        return {"out": out, "submitted": {}, "owner_cpu": time.process_time() - cpu}

    arms = {
        "raw": raw,
        "raw_in_task": lambda: ray.get(remote_raw.remote(shards)),
        "ours_in_task": lambda: ray.get(remote_ours.remote(shards)),
        "ours_step": lambda: executor.execute(TimelineStep, {"shards": shards}),
    }
    few = [(1000, i) for i in range(cpus)]  # warm up workers and exports
    ray.get([remote.remote(s) for s in few])
    ray.get([remote_raw.remote(few), remote_ours.remote(few)])
    executor.execute(TimelineStep, {"shards": few})
    limit = args.worker_soft_limit or "Ray default (CPUs)"
    print(
        f"ray {ray.__version__}, {args.shards} x {args.work_ms:.0f} ms, ray CPUs {cpus}, soft limit {limit}"
    )
    seen: set[int] = set()  # shard worker pids so far: a pid not in it is a worker started for that fan-out
    for r in range(args.rounds):
        print(f"round {r + 1}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        for name, arm in arms.items():
            started = time.perf_counter()
            res = arm()
            report(name, time.perf_counter() - started, res, cpus, seen)
    ray.shutdown()


if __name__ == "__main__":
    main()

"""Run-lifecycle figures: driver memory per run, and how fast a follower sees the end.

1. driver memory per run over N runs, per mode (local, Ray task, Ray actors):
   Python allocations still held after the runs (tracemalloc), divided by N
                                                             (goal: under 1 KB per run, flat)
2. task mode: from the moment the action returns to a long-polling follower
   (``wait_for_update``) seeing SUCCEEDED                   (goal p95 <= 100 ms)

    .venv/bin/python bench/lifecycle.py            # about 2 minutes
    .venv/bin/python bench/lifecycle.py --runs 50  # quicker, coarser

The 1 s action's overhead in ms is figure 2 of bench/overhead.py.
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import argparse  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from typing import Any  # noqa: E402

from pydantic import BaseModel  # noqa: E402

from bench.prelude import precompile  # noqa: E402  (sets Ray's environment; ray is imported in main)
from synapse_ray import BaseStep, BaseTrainAction, StepRegistry, StepResult, TrainContext  # noqa: E402


class NoParams(BaseModel):
    pass


class EndStampAction(BaseTrainAction[NoParams]):
    """Reports progress, then returns the wall-clock time of its very end."""

    def execute(self) -> float:
        self.set_progress(1, 1, self.progress.TRAIN)
        return time.time()


class OneStep(BaseStep[TrainContext]):
    name = "only"

    def execute(self, ctx: TrainContext) -> StepResult:
        ctx.set_progress(1, 1, "train")
        return StepResult()


class OneStepAction(BaseTrainAction[NoParams]):
    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        registry.register(OneStep())


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[max(0, math.ceil(q / 100.0 * len(s)) - 1)]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def held_per_run(run_once: Any, settle: Any, runs: int, warmup: int = 20) -> tuple[float, float]:
    """Bytes of Python allocations still held after ``runs`` runs, per run; and the
    same over the second half only (a leak grows in both halves, a cache only in the first).

    ``settle`` waits until every run that ended has finished its bookkeeping, after
    the warm-up too: the kept run threads a backlog made (the aggregator answers
    slowly while it starts) are there before counting starts, as in a warm driver."""
    for _ in range(warmup):
        run_once()
    settle()
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    half = runs // 2
    for _ in range(half):
        run_once()
    gc.collect()
    mid = tracemalloc.get_traced_memory()[0]
    for _ in range(runs - half):
        run_once()
    settle()  # run threads finish their bookkeeping
    gc.collect()
    end = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    return (end - base) / runs, (end - mid) / (runs - half)


def fig_memory(ours: Any, runs: int) -> list[str]:
    from synapse_ray import LocalExecutor, RayExecutor

    lines = []
    arms = {
        "local": (LocalExecutor(), ours.EndStampAction),
        "ray task": (RayExecutor(mode="task"), ours.EndStampAction),
        "ray actors": (RayExecutor(mode="actors"), ours.OneStepAction),
    }
    for name, (ex, action) in arms.items():
        per_run, second_half = held_per_run(
            lambda ex=ex, action=action: ex.execute(action, {}), lambda ex=ex: ex.close(timeout=30), runs
        )
        ok = per_run < 1024 and second_half < 1024
        lines.append(
            f"1. driver memory per run, {name}: {per_run:.0f} B/run over {runs} runs "
            f"({second_half:.0f} B/run over the second half) (goal < 1 KB/run, flat) {verdict(ok)}"
        )
    return lines


def fig_follower(ours: Any, samples: int) -> list[str]:
    from synapse_ray import RayExecutor, RunStatus

    ex = RayExecutor(mode="task")
    delays = []
    for _ in range(samples):
        handle = ex.submit(ours.EndStampAction, {})
        snap = handle.progress()
        while snap.status is not RunStatus.SUCCEEDED:
            snap = handle.wait_for_update(snap.version, timeout=5.0)
        seen = time.time()
        delays.append(seen - handle.result(timeout=30))
    p50, p95 = pct(delays, 50), pct(delays, 95)
    return [
        f"2. task run's end -> follower sees SUCCEEDED: p50 {p50 * 1e3:.1f} ms, p95 {p95 * 1e3:.1f} ms, "
        f"max {max(delays) * 1e3:.1f} ms, n={samples} (goal p95 <= 100 ms) {verdict(p95 <= 0.1)}"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per mode for the memory figure")
    parser.add_argument("--follow", type=int, default=50, help="runs followed for the latency figure")
    args = parser.parse_args()

    import ray

    import bench.lifecycle as ours

    started = time.perf_counter()
    print(f"command: {' '.join([sys.executable, *sys.argv])}")
    print(f"ray {ray.__version__}, python {sys.version.split()[0]}, load average {os.getloadavg()[0]:.2f}")
    print(precompile())
    ray.init(address="local", num_cpus=4, include_dashboard=False)
    for run in (lambda: fig_memory(ours, args.runs), lambda: fig_follower(ours, args.follow)):
        t0 = time.perf_counter()
        for line in run():
            print(line, flush=True)
        print(f"    ({time.perf_counter() - t0:.1f} s)", flush=True)
    ray.shutdown()
    print(f"total: {time.perf_counter() - started:.1f} s; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

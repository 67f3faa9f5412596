"""Cost of ``set_progress`` on the hot path.

Measures, in one run: the median cost of one ``set_progress`` call in a tight
loop, and a loop doing a small fixed amount of work per iteration with and
without a ``set_progress`` call, printing the ratio. Goal: <= 2 us per call,
loop ratio <= 1.03.

    .venv/bin/python bench/progress_cost.py
"""

from __future__ import annotations

import argparse
import statistics
import time

from pydantic import BaseModel

from synapse_ray import BaseTrainAction
from synapse_ray.runtime.context import RuntimeContext
from synapse_ray.runtime.progress_state import ProgressState
from synapse_ray.runtime.reporter import LocalSink, ProgressReporter


class P(BaseModel):
    n: int = 0


class Bench(BaseTrainAction[P]):
    def execute(self) -> None:
        return None


def work(x: float) -> float:
    # about 30 us of pure-Python work: a cheap training "iteration"
    for _ in range(400):
        x = (x * 1.000001 + 0.5) % 1000.0
    return x


def per_call(action: Bench, n: int) -> float:
    t0 = time.perf_counter()
    for i in range(n):
        action.set_progress(i, n, "train")
    return (time.perf_counter() - t0) / n


def loop(action: Bench | None, n: int) -> float:
    x = 1.0
    t0 = time.perf_counter()
    if action is None:
        for _ in range(n):
            x = work(x)
    else:
        for i in range(n):
            x = work(x)
            action.set_progress(i, n, "train")
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000)
    parser.add_argument("--iterations", type=int, default=3_000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()

    sink = LocalSink(ProgressState())
    action = Bench({}, RuntimeContext(progress=ProgressReporter(sink)))
    action.set_progress(0, 1, "train")  # start the sender thread outside the timing

    costs = [per_call(action, args.calls) for _ in range(args.repeats)]
    ratios = []
    for _ in range(args.repeats):  # interleave so drift hits both sides alike
        base = loop(None, args.iterations)
        with_progress = loop(action, args.iterations)
        ratios.append(with_progress / base)
    action.runtime_ctx.progress.close()
    cost_us = statistics.median(costs) * 1e6
    ratio = statistics.median(ratios)
    print(
        f"set_progress median cost: {cost_us:.3f} us/call (goal <= 2 us) "
        f"[{args.repeats} x {args.calls} calls]"
    )
    print(
        f"loop with/without set_progress: ratio {ratio:.4f} (goal <= 1.03) "
        f"[{args.repeats} x {args.iterations} iterations of ~{loop(None, 100) / 100 * 1e6:.0f} us]"
    )
    print(f"batches received by the sink: {sink.state.version}")


if __name__ == "__main__":
    main()

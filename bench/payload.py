"""A large array through three steps: ``RayExecutor`` (actor per step) against raw Ray.

Both arms in one run, interleaved round by round (order rotating):

- ours: an N MiB float64 array made in step 1 and read (summed) in steps 2 and
  3, ``RayExecutor(reuse_actors=False)`` (three actors) and
  ``RayExecutor(reuse_actors=True)``; the wall time of ``execute()``;
- raw: a producer actor returns the array, then two consumer actors, one after
  the other, each ``ray.get`` it by ref and sum it (actors made and killed per
  round, as ours without reuse);
- info only: the raw arm whose actors also import ``synapse_ray`` first (what
  every step actor of ours must do), to tell import cost from data handling.

Goals (at 256 MiB): median time ratio ours / raw <= 1.25x in both modes, and
driver peak RSS growth during a run <= 10 % of the payload (sampled every
2 ms from /proc/self/statm). 16 MiB is reported too, and 1 GiB with ``--big``
when ``MemAvailable`` leaves room (about 4x the payload).

    .venv/bin/python bench/payload.py                 # 16 and 256 MiB, about 2 minutes
    .venv/bin/python bench/payload.py --big           # also 1 GiB, if memory allows
    .venv/bin/python bench/payload.py --sizes 256 --rounds 7
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import argparse  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from pydantic import BaseModel  # noqa: E402

from bench.prelude import REPO, precompile  # noqa: E402  (sets Ray's environment; ray is imported in main)
from synapse_ray import BaseStep, BaseTrainAction, StepRegistry, StepResult, TrainContext  # noqa: E402

MIB = 1 << 20


# -- ours ---------------------------------------------------------------------
class PayloadParams(BaseModel):
    mib: int


class MakeStep(BaseStep[TrainContext]):
    name = "make"

    def execute(self, ctx: TrainContext) -> StepResult:
        ctx.dataset = np.full(ctx.params.mib * MIB // 8, 1.0)
        return StepResult()


class ReadStep(BaseStep[TrainContext]):
    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]

    def execute(self, ctx: TrainContext) -> StepResult:
        return StepResult(data={"sum": float(ctx.dataset.sum())})


class PayloadAction(BaseTrainAction[PayloadParams]):
    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        registry.register(MakeStep())
        registry.register(ReadStep("read1"))
        registry.register(ReadStep("read2"))

    def summarize(self, ctx: Any) -> dict[str, Any]:
        return {"sums": [r.data["sum"] for r in ctx.step_results[1:]], "held": type(ctx.dataset).__name__}


# -- raw (used from __main__: shipped by value, workers never import synapse_ray) --
class RawProducer:
    def make(self, n: int) -> np.ndarray:
        return np.full(n, 1.0)


class RawConsumer:
    def read(self, array: np.ndarray) -> float:
        return float(array.sum())


class RawImportProducer(RawProducer):
    """The raw producer plus what every step actor of ours does first: import our package."""

    def __init__(self) -> None:
        import synapse_ray.executors.ray.remote  # noqa: F401


class RawImportConsumer(RawConsumer):
    def __init__(self) -> None:
        import synapse_ray.executors.ray.remote  # noqa: F401


# -- measurement --------------------------------------------------------------
class PeakRss:
    """Samples this process's resident set every 2 ms; ``peak - start`` of one run."""

    def __init__(self) -> None:
        self.page = os.sysconf("SC_PAGE_SIZE")
        self._peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def rss(self) -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * self.page

    def __enter__(self) -> PeakRss:
        self.start = self.rss()
        self._peak = self.start
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(0.002):
            self._peak = max(self._peak, self.rss())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        assert self._thread is not None
        self._thread.join()
        self.growth = max(self._peak, self.rss()) - self.start


def run_ours(mib: int, reuse: bool) -> tuple[float, int]:
    import bench.payload as ours  # by reference, as from an installed package (workers import it)
    from synapse_ray import RayExecutor

    with PeakRss() as rss, RayExecutor(reuse_actors=reuse) as executor:
        t0 = time.perf_counter()
        result = executor.execute(ours.PayloadAction, {"mib": mib})
        elapsed = time.perf_counter() - t0
    expected = float(mib * MIB // 8)
    assert result["sums"] == [expected, expected], result
    assert result["held"] == "StoredValue", result  # the driver holds a reference, not the array
    return elapsed, rss.growth


def run_raw(mib: int, importing: bool = False) -> tuple[float, int]:
    import ray

    producer_cls = ray.remote(RawImportProducer if importing else RawProducer)
    consumer_cls = ray.remote(RawImportConsumer if importing else RawConsumer)
    with PeakRss() as rss:
        t0 = time.perf_counter()
        producer = producer_cls.remote()
        ref = producer.make.remote(mib * MIB // 8)
        ray.wait([ref], fetch_local=False)
        sums = []
        for _ in range(2):
            consumer = consumer_cls.remote()
            sums.append(ray.get(consumer.read.remote(ref)))
            ray.kill(consumer)
        ray.kill(producer)
        elapsed = time.perf_counter() - t0
        del ref
    assert sums == [float(mib * MIB // 8)] * 2
    return elapsed, rss.growth


def bench_size(mib: int, rounds: int) -> dict[str, Any]:
    arms: dict[str, Callable[[], tuple[float, int]]] = {
        "ours, reuse_actors=False": lambda: run_ours(mib, False),
        "ours, reuse_actors=True": lambda: run_ours(mib, True),
        "raw": lambda: run_raw(mib),
        "raw, actors import synapse_ray": lambda: run_raw(mib, importing=True),
    }
    names = list(arms)
    for name in names:  # warm-up: worker pool, imports, the aggregator
        arms[name]()
    times: dict[str, list[float]] = {n: [] for n in names}
    growth: dict[str, list[int]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            t, g = arms[name]()
            times[name].append(t)
            growth[name].append(g)
    return {"times": times, "growth": growth}


def mem_available() -> int:
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 256], help="payload sizes in MiB")
    parser.add_argument("--big", action="store_true", help="also 1024 MiB when memory allows")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    sizes = list(args.sizes)
    if args.big and 1024 not in sizes:
        if mem_available() >= 4 * 1024 * MIB:
            sizes.append(1024)
        else:
            print(f"skip 1024 MiB: MemAvailable {mem_available() / MIB:.0f} MiB < 4096 MiB")

    import ray

    print("$", shlex.join([sys.executable.replace(REPO + "/", ""), *sys.argv]))
    print(
        f"ray {ray.__version__}, python {sys.version.split()[0]}, cpus {os.cpu_count()}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(precompile())
    store = max(sizes) * MIB * 2 + 256 * MIB
    ray.init(address="local", num_cpus=4, include_dashboard=False, object_store_memory=store)
    started = time.perf_counter()
    ok = True
    for mib in sizes:
        out = bench_size(mib, args.rounds)
        raw = statistics.median(out["times"]["raw"])
        for name, ts in out["times"].items():
            med = statistics.median(ts)
            peak = max(out["growth"][name])
            share = peak / (mib * MIB)
            line = f"{mib} MiB, {name}: median {med:.3f} s [{min(ts):.3f}..{max(ts):.3f}], n={len(ts)}"
            if name.startswith("raw"):
                info = f"info: ratio to raw {med / raw:.2f}x; " if name != "raw" else ""
                print(f"{line}; {info}driver peak RSS growth {peak / MIB:.1f} MiB ({share:.1%})")
                continue
            ratio = med / raw
            goals = mib == 256
            passed = ratio <= 1.25 and share <= 0.10
            ok &= passed or not goals
            verdict = ("PASS" if passed else "MISS") if goals else "info"
            print(
                f"{line}; ratio {ratio:.2f}x (goal <= 1.25x); driver peak RSS growth "
                f"{peak / MIB:.1f} MiB = {share:.1%} of payload (goal <= 10%) {verdict}"
            )
    print(
        f"total {time.perf_counter() - started:.0f} s; load average now "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    ray.shutdown()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

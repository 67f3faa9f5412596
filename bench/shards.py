"""map_shards against serial, raw Ray tasks and Ray Data, on the same work, in one run.

    .venv/bin/python bench/shards.py [--rounds 6] [--shards 64] [--work-ms 200] [--worker-soft-limit N]

Arms (interleaved per round, each round in a rotated order, medians reported):

1. serial: every shard in this process, one after another. It runs in every
   round like the other arms: this VM's CPU speed drifts by 10 % over minutes,
   and a serial time taken once, minutes away from the arms, moved the
   efficiency by as much.
2. raw: ``ray.get([f.remote(s) for s in shards])``.
   procs (info): the same shards over a warm pool of plain processes, one per
   CPU, no Ray in their path: what any process fan-out gets from this machine
   while the cluster's own processes run beside it (the efficiency's ceiling).
3. raw, in a task (info): one Ray task that runs arm 2 itself, so its shards are
   children of a task as ours are in a step. The task holds a worker process and
   its shards need one per CPU: CPUs + 1 processes. The cluster here starts as
   ``RayExecutor`` starts a local one, keeping CPUs + 1 idle workers
   (``num_workers_soft_limit``, see ``local_instance_env``). At Ray's default,
   the CPU count (``--worker-soft-limit 2``), Ray stops the extra idle worker
   after each run and the next run starts one again (about 0.4 s of CPU on this
   machine, while a CPU slot waits for it): 2 to 13 % slower than from the
   driver here. Not Ray's nice-15 workers: ``RAY_worker_niceness=0`` left it.
4. ours, on the driver: ``map_shards`` with the Ray runner, from this process.
5. ours, in a step: a ``RayExecutor`` task-mode action that calls ``map_shards``
   (what users run: the mapper is itself a Ray task, shards are its children).

Then driver memory: a fresh process maps 1,000 and another 20,000 tiny shards
(``iter_shards`` over a generator) against the same cluster; peak RSS of each.

Last, Ray Data: ``ray.data.from_items(shards).map(f)`` (only when ``ray.data``
imports: it needs pyarrow), in rounds of its own. It runs after everything
else because the actors Ray Data starts in the cluster stay and take CPU from
every arm measured after them (about 3 points of efficiency on 2 CPUs).

Goals: parallel efficiency serial / (ours x CPUs) >= 0.85; ours / raw <= 1.05;
peak RSS at 20,000 within 10 % of 1,000. Efficiency is printed against the serial
run's wall time (the definition) and its CPU time (what the work costs on an idle
core: on a shared machine the wall time of one serial run swings with the load).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pydantic import BaseModel  # noqa: E402

from bench.prelude import precompile  # noqa: E402  (sets Ray's environment; ray is imported in main)
from synapse_ray import BaseTrainAction, RayExecutor, RuntimeContext, iter_shards, map_shards  # noqa: E402
from synapse_ray.executors.ray.connect import SOFT_LIMIT_ENV, local_instance_env  # noqa: E402
from synapse_ray.executors.ray.shards import RayShardRunner  # noqa: E402

RAY_CPUS = 2  # the cluster this script starts, and the plain-process pool alike


def burn(loops: int) -> int:
    """About ``work_ms`` of pure-Python CPU (the GIL is held: one core per shard)."""
    acc = 0
    for i in range(loops):
        acc += i * i % 7
    return acc


def tiny(x: int) -> int:
    return x


def calibrate(work_ms: float) -> int:
    loops = 200_000
    while True:  # CPU time, not wall: other processes on the machine must not skew it
        started = time.process_time()
        burn(loops)
        took = (time.process_time() - started) * 1000
        if took > 50:
            return int(loops * work_ms / took)
        loops *= 2


class BenchParams(BaseModel):
    shards: int
    loops: int


class ShardsInAStep(BaseTrainAction[BenchParams]):
    action_name = "bench_shards"

    def execute(self) -> int:
        p = self.params
        return len(map_shards(self, burn, [p.loops] * p.shards))


def raw_in_task(loops: list[int]) -> int:
    """Arm 3: ``ray.get([f.remote(s) ...])`` run by a Ray task instead of the driver."""
    import ray

    remote_burn = ray.remote(burn)
    return len(ray.get([remote_burn.remote(s) for s in loops]))


def timed(fn: Any) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def rss_child(n: int, address: str) -> None:
    """Map ``n`` tiny shards against ``address``; print peak RSS (MiB) as JSON."""
    import ray

    ray.init(address=address, include_dashboard=False, logging_level="ERROR")
    rt = RuntimeContext(shard_runner=RayShardRunner())
    warm = sum(1 for _ in iter_shards(rt, tiny, range(200)))  # workers, imports, the remote function
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    count = sum(1 for _ in iter_shards(rt, tiny, (x for x in range(n))))
    took = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "count": count, "warm": warm, "base_mib": base, "peak_mib": peak, "s": took}))


def run_rounds(arms: dict[str, Any], times: dict[str, list[float]], rounds: int) -> None:
    """Interleaved rounds: each arm once per round, so a change in the machine's load hits all.

    Round r starts at arm r (rotated): an arm pays for what the one before it left
    behind (a Ray worker stopping or starting, the daemons catching up), and in a
    fixed order the same arm always paid for the same neighbour."""
    names = list(arms)
    for r in range(rounds):
        k = r % len(names)
        order = names[k:] + names[:k]
        for name in order:
            times[name].append(timed(arms[name]))
        print(
            f"round {r + 1}: "
            + ", ".join(f"{k} {times[k][-1]:.2f} s" for k in order)
            + f" (load {os.getloadavg()[0]:.2f})"
        )


def ray_data_arm(
    rd: Any,
    ray: Any,
    fn: Any,
    shards: list[int],
    times: dict[str, list[float]],
    rounds: int,
    med: dict[str, float],
) -> None:
    """Ray Data's ``map`` on the same work, last: the actors Ray Data starts in a cluster
    (its stats and autoscaling coordinators) stay for the cluster's life and take CPU
    from every arm measured after them, which a run without Ray Data never pays."""
    if rd is None:
        print("4. Ray Data: not measured (ray.data needs pyarrow: pip install 'synapse-ray[data]')")
        return
    rd.DataContext.get_current().enable_progress_bars = False

    def arm(items: list[int]) -> Any:
        return (
            rd.from_items(items, override_num_blocks=len(items))
            .map(lambda row: {"item": fn(row["item"])})
            .take_all()
        )

    arm([1000] * int(ray.cluster_resources()["CPU"]))  # warm-up: Ray Data's executor and actors
    times["ray_data"] = []
    run_rounds({"ray_data": lambda: arm(shards)}, times, rounds)
    m = statistics.median(times["ray_data"])
    print(
        f"4. ours (in a step) / Ray Data map: {med['ours_step'] / m:.3f}x (report only; Ray Data "
        f"{m:.2f} s [{min(times['ray_data']):.2f}..{max(times['ray_data']):.2f}])"
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--rounds", type=int, default=6, help="rounds of every arm; 6 starts each arm first once"
    )
    parser.add_argument("--shards", type=int, default=64)
    parser.add_argument("--work-ms", type=float, default=200.0)
    parser.add_argument("--rss", type=int, nargs=2, default=[1_000, 20_000])
    parser.add_argument("--rss-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    parser.add_argument(
        "--worker-soft-limit",
        type=int,
        help="idle workers the cluster keeps (num_workers_soft_limit; default as RayExecutor: CPUs + 1)",
    )
    args = parser.parse_args()
    if args.rss_child:
        rss_child(args.rss_child, args.address)
        return

    import ray

    loops = calibrate(args.work_ms)
    n = args.shards
    # forked and warmed before Ray starts its threads in this process
    pool = ProcessPoolExecutor(max_workers=RAY_CPUS, mp_context=multiprocessing.get_context("fork"))
    list(pool.map(burn, [1000] * RAY_CPUS))
    # read by the raylet this ray.init starts: as RayExecutor's local instance, unless given
    if args.worker_soft_limit is not None:
        os.environ[SOFT_LIMIT_ENV] = str(args.worker_soft_limit)
    else:
        os.environ.update(local_instance_env(RAY_CPUS))
    # a cluster of its own, even when another one was started on this machine with `ray start`
    ctx = ray.init(address="local", num_cpus=RAY_CPUS, include_dashboard=False, logging_level="ERROR")
    cpus = int(ray.cluster_resources()["CPU"])
    print(
        f"ray {ray.__version__}, python {sys.version.split()[0]}, cpu count {os.cpu_count()}, "
        f"ray CPUs {cpus}, worker soft limit {os.environ.get(SOFT_LIMIT_ENV, 'Ray default (CPUs)')}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(precompile())
    remote_burn = ray.remote(burn)
    remote_raw_in_task = ray.remote(raw_in_task)
    rt = RuntimeContext(shard_runner=RayShardRunner())
    executor = RayExecutor(mode="task")
    try:
        import ray.data as rd
    except ImportError as exc:  # pyarrow missing
        rd = None
        print(f"Ray Data arm skipped: {exc}")
    shards = [loops] * n
    serial_cpu_times: list[float] = []

    def serial_arm() -> None:
        started = time.process_time()
        for s in shards:
            burn(s)
        serial_cpu_times.append(time.process_time() - started)

    arms: dict[str, Any] = {
        "serial": serial_arm,
        "raw": lambda: ray.get([remote_burn.remote(s) for s in shards]),
        "procs": lambda: list(pool.map(burn, shards)),
        "raw_in_task": lambda: ray.get(remote_raw_in_task.remote(shards)),
        "ours_driver": lambda: map_shards(rt, burn, shards),
        "ours_step": lambda: executor.execute(ShardsInAStep, {"shards": n, "loops": loops}),
    }
    # warm up, small: worker processes, function exports, the aggregator
    few = [1000] * cpus
    ray.get([remote_burn.remote(s) for s in few])
    ray.get(remote_raw_in_task.remote(few))
    map_shards(rt, burn, few)
    executor.execute(ShardsInAStep, {"shards": cpus, "loops": 1000})

    times: dict[str, list[float]] = {k: [] for k in arms}
    run_rounds(arms, times, args.rounds)
    med = {k: statistics.median(v) for k, v in times.items()}
    serial, serial_cpu = med["serial"], statistics.median(serial_cpu_times)
    per_shard = serial / n * 1000
    print(
        f"\n{n} shards x {per_shard:.0f} ms on {cpus} CPUs; serial {serial:.2f} s (CPU {serial_cpu:.2f} s); "
        f"medians of {args.rounds}:"
    )
    for k, v in med.items():
        print(f"  {k:12s} {v:.2f} s  [{min(times[k]):.2f}..{max(times[k]):.2f}]")

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    for label, base in (("serial wall time", serial), ("serial CPU time", serial_cpu)):
        eff = {k: base / (med[k] * cpus) for k in ("ours_step", "ours_driver", "raw")}
        print(
            f"1. parallel efficiency, {label} / (ours x CPUs): in a step {eff['ours_step']:.3f}, from the "
            f"driver {eff['ours_driver']:.3f} (raw Ray: {eff['raw']:.3f}) (goal >= 0.85) "
            f"{verdict(eff['ours_step'] >= 0.85)}"
        )
    ceiling = serial / (med["procs"] * cpus)
    print(
        f"   info: plain processes, no Ray in their path (a warm pool of {cpus}, beside this cluster's "
        f"idle daemons): {ceiling:.3f}; raw Ray reaches {serial / (med['raw'] * cpus) / ceiling:.3f} of that"
    )
    ratio = med["ours_step"] / med["raw"]
    ratio_driver = med["ours_driver"] / med["raw"]
    print(
        f"2. ours / raw ray.get([f.remote(s) ...]): in a step {ratio:.3f}x, from the driver "
        f"{ratio_driver:.3f}x (goal <= 1.05x) {verdict(ratio <= 1.05)}"
    )
    print(
        f"   info: raw in a task / raw {med['raw_in_task'] / med['raw']:.3f}x; ours in a step / raw in a "
        f"task {med['ours_step'] / med['raw_in_task']:.3f}x (both owners are Ray workers)"
    )
    address = ctx.address_info["address"]
    rss = {}
    for count in args.rss:
        out = subprocess.run(
            [sys.executable, __file__, "--rss-child", str(count), "--address", address],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rss[count] = json.loads(out.strip().splitlines()[-1])
    small, big = (rss[c] for c in args.rss)
    growth = big["peak_mib"] / small["peak_mib"] - 1
    print(
        f"3. driver peak RSS: {args.rss[0]:,} shards {small['peak_mib']:.1f} MiB ({small['s']:.1f} s), "
        f"{args.rss[1]:,} shards {big['peak_mib']:.1f} MiB ({big['s']:.1f} s): {100 * growth:+.1f} % "
        f"(after warm-up {small['base_mib']:.1f} / {big['base_mib']:.1f} MiB) (goal within 10 %) "
        f"{verdict(abs(growth) <= 0.10)}"
    )
    pool.shutdown()
    ray_data_arm(rd, ray, burn, shards, times, args.rounds, med)
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    ray.shutdown()


if __name__ == "__main__":
    main()

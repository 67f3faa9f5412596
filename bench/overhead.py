"""What running an action through ``RayExecutor`` costs on top of raw Ray.

One run measures five figures, each against its goal, with our code and the
raw-Ray baseline interleaved so machine noise hits both sides alike:

1. trivial action, task mode, vs ``ray.get(f.remote())``        (ratio <= 1.6x)
2. 1 s action, task mode, vs a raw task sleeping 1 s            (ratio <= 1.02x, overhead <= 2 ms)
3. per-step cost in actor mode, with and without actor reuse,
   vs raw Ray creating / calling / killing one actor per step   (ratio <= 1.1x, reuse <= 2.5 ms/step)
4. aggregator throughput, batches of 100 events                  (>= 50,000 events/s)
5. set_progress on a worker -> value seen on the driver, p95     (<= 300 ms)

    .venv/bin/python bench/overhead.py            # about 2 minutes
    .venv/bin/python bench/overhead.py --quick    # about 1 minute

See bench/README.md for what each figure means and how it is measured.
"""

from __future__ import annotations

import os
import sys

# Our actions are used as ``bench.overhead.X`` (by reference, like actions from
# any installed package): the prelude makes the repository importable here and
# in the workers.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import argparse  # noqa: E402
import math  # noqa: E402
import random  # noqa: E402
import shlex  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from types import SimpleNamespace  # noqa: E402
from typing import Any  # noqa: E402

from pydantic import BaseModel  # noqa: E402

from bench.prelude import precompile  # noqa: E402  (sets Ray's environment; ray is imported in main)
from synapse_ray import BaseStep, BaseTrainAction, StepRegistry, StepResult, TrainContext  # noqa: E402

# --------------------------------------------------------------------------
# Our actions.
# --------------------------------------------------------------------------


class NoParams(BaseModel):
    pass


class TrivialAction(BaseTrainAction[NoParams]):
    def execute(self) -> dict[str, bool]:
        return {"ok": True}


class SleepParams(BaseModel):
    seconds: float = 1.0


class SleepAction(BaseTrainAction[SleepParams]):
    def execute(self) -> dict[str, bool]:
        time.sleep(self.params.seconds)
        return {"ok": True}


class StepsParams(BaseModel):
    n: int = 5


class StampStep(BaseStep[TrainContext]):
    """A trivial step that only records when it ran (in its worker)."""

    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]

    def execute(self, ctx: TrainContext) -> StepResult:
        ctx.stamps = [*getattr(ctx, "stamps", []), time.time()]
        return StepResult()


class StepsAction(BaseTrainAction[StepsParams]):
    """N trivial steps with identical (default) options."""

    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        for i in range(self.params.n):
            registry.register(StampStep(f"s{i}"))

    def summarize(self, ctx: Any) -> dict[str, Any]:
        out = dict(super().summarize(ctx))
        out["stamps"] = list(getattr(ctx, "stamps", []))
        return out


class LatencyParams(BaseModel):
    base: float
    samples: int = 50
    seed: int = 0


LATENCY_TOTAL = 1e6


class LatencyAction(BaseTrainAction[LatencyParams]):
    """Reports ``time.time() - base`` as progress at random moments."""

    def execute(self) -> dict[str, int]:
        p = self.params
        rng = random.Random(p.seed)
        time.sleep(0.3)  # let the driver's first long-poll get in place
        for _ in range(p.samples):
            self.set_progress(time.time() - p.base, LATENCY_TOTAL, "train")
            # 150-250 ms apart: not a multiple of the 100 ms send interval, and
            # longer than the expected delay, so the driver sees each value.
            time.sleep(rng.uniform(0.15, 0.25))
        return {"sent": p.samples}


# --------------------------------------------------------------------------
# The raw-Ray baselines: used from ``__main__``, so cloudpickle ships them by
# value and their workers never import this module (nor synapse_ray).
# --------------------------------------------------------------------------


def raw_trivial() -> dict[str, bool]:
    return {"ok": True}


def raw_sleep(seconds: float) -> dict[str, bool]:
    time.sleep(seconds)
    return {"ok": True}


class RawWorker:
    def run(self) -> float:
        return time.time()


class RawImportWorker(RawWorker):
    """The raw actor plus the one thing every step actor of ours must do: import our package."""

    def __init__(self) -> None:
        import synapse_ray.executors.ray.remote  # noqa: F401


def push_client(aggregator: Any, run_id: str, batches: int, size: int) -> int:
    """A client process pushing ``batches`` batches of ``size`` events, then waiting for all."""
    import ray

    from synapse_ray.executors.ray.ordering import next_seq
    from synapse_ray.runtime.progress import PROGRESS, ProgressEvent

    batch = [
        ProgressEvent(PROGRESS, "s0", 1, "train", float(i), float(size), worker="bench") for i in range(size)
    ]
    # numbered as a sink numbers them: the aggregator folds each process's batches in order
    refs = [aggregator.push.remote(run_id, batch, *next_seq(run_id)) for _ in range(batches)]
    ray.get(refs)
    return batches * size


def touch() -> int:
    """Warm-up: make a pooled worker import the progress events."""
    import synapse_ray.runtime.progress  # noqa: F401

    return os.getpid()


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def pct(xs: list[float], q: float) -> float:
    """Nearest-rank percentile, q in (0, 100]."""
    s = sorted(xs)
    return s[max(0, math.ceil(q / 100.0 * len(s)) - 1)]


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def spread(xs: list[float], scale: float = 1.0, fmt: str = "{:.1f}") -> str:
    return f"[{fmt.format(min(xs) * scale)}..{fmt.format(max(xs) * scale)}]"


def interval_per_step(stamps: list[float]) -> float:
    """Mean time from one step's execute() to the next one's (no per-run fixed cost)."""
    if len(stamps) < 2:
        raise ValueError("need at least two stamps")
    return (stamps[-1] - stamps[0]) / (len(stamps) - 1)


def command_line() -> str:
    try:
        with open("/proc/self/cmdline", "rb") as fh:
            parts = [p.decode() for p in fh.read().split(b"\0") if p]
        if parts:
            return shlex.join(parts)
    except OSError:
        pass
    return shlex.join([sys.executable, *sys.argv])


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_times() -> list[int] | None:
    """The machine's CPU counters (user nice system idle iowait irq softirq steal), Linux only."""
    try:
        with open("/proc/stat") as fh:
            return [int(x) for x in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return None


def cpu_usage(before: list[int] | None, after: list[int] | None) -> str:
    if not before or not after:
        return "n/a"
    d = [b - a for a, b in zip(before, after, strict=True)]
    total = sum(d) or 1
    return f"busy {100 * (total - d[3] - d[4]) / total:.0f}%, steal {100 * d[7] / total:.0f}%"


def rotate(jobs: list[Any], r: int) -> list[Any]:
    """Round r runs the jobs in a rotated order, so no job always follows the same one."""
    k = r % len(jobs)
    return jobs[k:] + jobs[:k]


# --------------------------------------------------------------------------
# the figures
# --------------------------------------------------------------------------


def fig_trivial(ray: Any, ours: Any, by_value: Any, ex: Any, rounds: int) -> list[str]:
    raw = ray.remote(raw_trivial)
    arms = {
        "ours": lambda: ex.execute(ours.TrivialAction, {}),
        "raw": lambda: ray.get(raw.remote()),
        "by_value": lambda: ex.execute(by_value.TrivialAction, {}),
    }
    for _ in range(5):
        for fn in arms.values():
            fn()
    t: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(rounds):
        for name in rotate(list(arms), r):
            dt, out = timed(arms[name])
            assert out == {"ok": True}, out
            t[name].append(dt)
    m = {k: median(v) for k, v in t.items()}
    ratio = m["ours"] / m["raw"]
    return [
        f"1. trivial action, task mode: ours p50 {m['ours'] * 1e3:.2f} ms {spread(t['ours'], 1e3)}, "
        f"raw p50 {m['raw'] * 1e3:.2f} ms {spread(t['raw'], 1e3)}, n={rounds} each; "
        f"ratio {ratio:.2f}x (goal <= 1.6x) {verdict(ratio <= 1.6)}",
        f"    info: same action defined in __main__ (class pickled by value each run): p50 "
        f"{m['by_value'] * 1e3:.2f} ms, ratio {m['by_value'] / m['raw']:.2f}x",
    ]


PAGE = 4096


def page_cost(samples: int, pages: int = 2048) -> tuple[float, float]:
    """Microseconds to touch one 4 KiB page left alone for 1 s, and the same page at once after.

    On the VMs these figures come from (nested paging), a page of memory that no
    one touched for about a second costs 10 to 15 us to touch again, whatever the
    CPU did meanwhile (busy or idle), against well under 1 us warm. The work after
    a long task, ours and Ray's alike, then costs by the memory it touches, not by
    its instructions.
    """
    buf = bytearray(pages * PAGE)

    def touch() -> None:
        for i in range(0, len(buf), PAGE):
            buf[i] = 1

    touch()
    warm, cold = [], []
    for _ in range(samples):
        time.sleep(1.0)
        cold.append(timed(touch)[0])
        warm.append(timed(touch)[0])
    return median(warm) / pages * 1e6, median(cold) / pages * 1e6


def touched_kib(fn: Any) -> float | None:
    """KiB of this process's memory touched while ``fn`` ran, background threads included
    (the kernel's accessed bits: Linux only, else None)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("1")
        fn()
        with open("/proc/self/smaps_rollup") as f:
            return float(sum(int(line.split()[1]) for line in f if line.startswith("Referenced:")))
    except OSError:
        return None


def fig_sleep(ray: Any, ours: Any, ex: Any, pairs: int) -> list[str]:
    raw = ray.remote(raw_sleep)
    ex.execute(ours.SleepAction, {"seconds": 0.05})
    ray.get(raw.remote(0.05))
    arms = {
        "ours": lambda: ex.execute(ours.SleepAction, {"seconds": 1.0}),
        "raw": lambda: ray.get(raw.remote(1.0)),
    }
    t: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(pairs):
        for name in rotate(list(arms), r):
            t[name].append(timed(arms[name])[0])
    m = {k: median(v) for k, v in t.items()}
    ratio = m["ours"] / m["raw"]
    extra = m["ours"] - m["raw"]
    paired = sorted(o - r for o, r in zip(t["ours"], t["raw"], strict=True))  # same round, same machine
    kib: dict[str, list[float]] = {k: [] for k in arms}
    for r in range(max(3, pairs // 3)):
        for name in rotate(list(arms), r):
            kib[name].append(touched_kib(arms[name]) or 0.0)
    warm, cold = page_cost(pairs)
    lines = [
        f"2. 1 s action, task mode: ours p50 {m['ours'] * 1e3:.1f} ms {spread(t['ours'], 1e3)}, "
        f"raw p50 {m['raw'] * 1e3:.1f} ms {spread(t['raw'], 1e3)}, n={pairs} each; "
        f"ratio {ratio:.4f}x (goal <= 1.02x) {verdict(ratio <= 1.02)}; "
        f"overhead +{extra * 1e3:.1f} ms (goal <= 2 ms) {verdict(extra <= 0.002)}",
        f"    info: per round, ours - raw (the two runs next to each other): median "
        f"{median(paired) * 1e3:+.1f} ms, from {paired[0] * 1e3:+.1f} to {paired[-1] * 1e3:+.1f}",
        f"    info: this machine: touching a 4 KiB page no one touched for 1 s took {cold:.1f} us, "
        f"at once after {warm:.2f} us ({cold / warm:.0f}x), n={pairs}",
    ]
    if all(kib.values()) and all(kib["ours"] + kib["raw"]):
        pages = (median(kib["ours"]) - median(kib["raw"])) / (PAGE / 1024)
        lines.append(
            f"    info: memory the driver touched in one run: ours {median(kib['ours']):,.0f} KiB, raw "
            f"{median(kib['raw']):,.0f} KiB; {pages:+,.0f} pages x {cold:.1f} us = "
            f"{pages * cold / 1e3:+.1f} ms if all were cold (the workers' not counted), n={len(kib['ours'])}"
        )
    return lines


def raw_steps(ray: Any, actor_cls: Any, n: int) -> list[float]:
    """What actor mode without reuse does, by hand: per step create, call once, kill."""
    stamps = []
    for _ in range(n):
        actor = actor_cls.options(max_restarts=0, max_concurrency=1).remote()
        stamps.append(ray.get(actor.run.remote()))
        ray.kill(actor, no_restart=True)
    return stamps


def settle(seconds: float = 2.0) -> None:
    """Let the processes of actors killed just before exit (and Ray start their replacements)."""
    time.sleep(seconds)


def fig_steps(ray: Any, ours: Any, by_value: Any, rounds: int, n: int, n_reuse: int) -> list[str]:
    from synapse_ray import RayExecutor

    no_reuse = RayExecutor(mode="actors", reuse_actors=False)
    reuse = RayExecutor(mode="actors", reuse_actors=True)
    actor_cls = ray.remote(RawWorker)
    import_cls = ray.remote(RawImportWorker)
    kept = actor_cls.remote()  # for the raw "one actor, one call per step" baseline

    def ours_run(ex: Any, action: Any, steps: int) -> tuple[float, list[float]]:
        dt, out = timed(lambda: ex.execute(action, {"n": steps}))
        assert out["steps_executed"] == steps, out
        return dt, out["stamps"]

    def raw_run(steps: int, cls: Any = actor_cls) -> tuple[float, list[float]]:
        return timed(lambda: raw_steps(ray, cls, steps))

    def raw_calls(steps: int) -> list[float]:
        return [ray.get(kept.run.remote()) for _ in range(steps)]

    def raw_fresh(steps: int) -> list[float]:
        """A new actor per run, as ours gets: its first call-to-call interval is Ray's own setup."""
        actor = actor_cls.options(max_restarts=0, max_concurrency=1).remote()
        stamps = [ray.get(actor.run.remote()) for _ in range(steps)]
        ray.kill(actor, no_restart=True)
        return stamps

    # warm-up: first actor of each kind, the step classes exported, the runs' code paths taken
    ours_run(no_reuse, ours.StepsAction, 2)
    ours_run(reuse, ours.StepsAction, 2)
    ours_run(reuse, by_value.StepsAction, 2)
    raw_run(2)
    raw_run(2, import_cls)
    raw_calls(n_reuse)
    raw_fresh(n_reuse)

    names = ("no_reuse", "raw", "raw_import", "reuse", "reuse_by_value", "raw_calls", "raw_fresh")
    per: dict[str, list[float]] = {k: [] for k in names}
    first: dict[str, list[float]] = {k: [] for k in names}  # the first interval of a run, alone
    wall: dict[str, list[float]] = {"no_reuse": [], "raw": []}  # (T(n) - T(1)) / (n - 1)

    def job(name: str) -> None:
        if name == "no_reuse":
            t_n, stamps = ours_run(no_reuse, ours.StepsAction, n)
            t_1, _ = ours_run(no_reuse, ours.StepsAction, 1)
        elif name == "raw":
            t_n, stamps = raw_run(n)
            t_1, _ = raw_run(1)
        else:
            if name == "raw_import":
                _, stamps = raw_run(n, import_cls)
            elif name == "reuse":
                _, stamps = ours_run(reuse, ours.StepsAction, n_reuse)
            elif name == "reuse_by_value":
                _, stamps = ours_run(reuse, by_value.StepsAction, n_reuse)
            elif name == "raw_fresh":
                stamps = raw_fresh(n_reuse)
            else:
                stamps = raw_calls(n_reuse)
            if name == "raw_import":
                per[name].append(interval_per_step(stamps))
                return
            # One actor serves every step. A new actor's first return and second call
            # cost Ray about 10 ms once (raw_fresh shows it): a per-run cost, so
            # the per-step figure starts at the second step.
            first[name].append(stamps[1] - stamps[0])
            per[name].append(interval_per_step(stamps[1:]))
            return
        per[name].append(interval_per_step(stamps))
        wall[name].append((t_n - t_1) / (n - 1))

    # The arms that start and kill an actor per step run in rounds of their own,
    # before the arms that call one actor: each killed actor's process exits and
    # Ray starts others in the background, which slowed whatever call came next.
    for group in (("no_reuse", "raw", "raw_import"), ("reuse", "reuse_by_value", "raw_calls", "raw_fresh")):
        settle()
        for r in range(rounds):
            for name in rotate(list(group), r):
                job(name)
    ray.kill(kept)
    m = {k: median(v) for k, v in per.items()}
    ratio = m["no_reuse"] / m["raw"]
    wall_ratio = median(wall["no_reuse"]) / median(wall["raw"])
    return [
        f"3a. actor mode per step, reuse_actors=False vs raw (create actor, 1 call, kill; {n} steps, "
        f"{rounds} rounds): ours {m['no_reuse'] * 1e3:.1f} ms/step {spread(per['no_reuse'], 1e3)}, "
        f"raw {m['raw'] * 1e3:.1f} ms/step {spread(per['raw'], 1e3)}; ratio {ratio:.3f}x "
        f"(goal <= 1.1x) {verdict(ratio <= 1.1)}",
        f"    cross-check, wall clock (T({n} steps) - T(1 step)) / {n - 1}: ours "
        f"{median(wall['no_reuse']) * 1e3:.1f} ms/step, raw {median(wall['raw']) * 1e3:.1f} ms/step, "
        f"ratio {wall_ratio:.3f}x (info)",
        f"    info: raw actor that also imports synapse_ray in __init__: {m['raw_import'] * 1e3:.1f} ms/step "
        f"{spread(per['raw_import'], 1e3)}; ours / that: {m['no_reuse'] / m['raw_import']:.3f}x",
        f"3b. actor mode per step, reuse_actors=True ({n_reuse} steps, {rounds} rounds, from the second "
        f"step): {m['reuse'] * 1e3:.2f} ms/step {spread(per['reuse'], 1e3, '{:.2f}')} "
        f"(goal <= 2.5 ms/step) {verdict(m['reuse'] <= 0.0025)}",
        f"    info: raw, one kept actor, one call per step: {m['raw_calls'] * 1e3:.2f} ms/step; raw, a new "
        f"actor per run like ours: {m['raw_fresh'] * 1e3:.2f} ms/step; ours with the action defined in "
        f"__main__ (pickled by value): {m['reuse_by_value'] * 1e3:.2f} ms/step",
        f"    info: a new actor's first step to second step, once per run: ours "
        f"{median(first['reuse']) * 1e3:.1f} ms, raw {median(first['raw_fresh']) * 1e3:.1f} ms "
        f"(kept actor {median(first['raw_calls']) * 1e3:.1f} ms); counted in: ours "
        f"{interval_with_first(m['reuse'], median(first['reuse']), n_reuse) * 1e3:.2f} ms/step",
    ]


def interval_with_first(per_step: float, first: float, n: int) -> float:
    """The mean interval over all ``n`` steps, the first one included."""
    return (first + per_step * (n - 2)) / (n - 1)


def fig_aggregator(ray: Any, reps: int, batches: int, size: int = 100) -> list[str]:
    from synapse_ray.executors.ray.aggregator import ProgressAggregator

    # a private aggregator, configured as get_aggregator() does, so killing it is harmless
    agg = ray.remote(ProgressAggregator).options(num_cpus=0, max_concurrency=1000).remote()
    ray.get(agg.ping.remote())
    client = ray.remote(num_cpus=1, max_retries=0)(push_client)
    ray.get([ray.remote(touch).remote() for _ in range(4)])

    def one(clients: int) -> float:
        before = ray.get(agg.stats.remote())["events_total"]
        t0 = time.perf_counter()
        refs = [client.remote(agg, uuid.uuid4().hex[:12], batches, size) for _ in range(clients)]
        sent = sum(ray.get(refs))
        dt = time.perf_counter() - t0
        folded = ray.get(agg.stats.remote())["events_total"] - before
        assert folded == sent == clients * batches * size, (folded, sent)
        return sent / dt

    one(1)  # warm-up
    one(2)
    rates: dict[int, list[float]] = {1: [], 2: []}
    for r in range(reps):
        for clients in rotate([1, 2], r):
            rates[clients].append(one(clients))
    ray.kill(agg)
    lines = []
    for clients in (1, 2):
        rate = median(rates[clients])
        lines.append(
            f"4{'ab'[clients - 1]}. aggregator throughput, {clients} client process"
            f"{'es' if clients > 1 else ''} x {batches} batches of {size}, {reps} reps: {rate:,.0f} events/s "
            f"{spread(rates[clients], 1, '{:,.0f}')} (goal >= 50,000 events/s) {verdict(rate >= 50_000)}"
        )
    return lines


def fig_latency(ours: Any, ex: Any, samples: int) -> list[str]:
    base = time.time()
    handle = ex.submit(ours.LatencyAction, {"base": base, "samples": samples, "seed": 7})
    delays: list[float] = []
    seen: set[float] = set()
    version = 0
    deadline = time.monotonic() + 30 + samples * 0.5
    while time.monotonic() < deadline:
        snap = handle.wait_for_update(version, timeout=1.0)
        now = time.time()
        version = snap.version
        cat = snap.categories.get("train")
        if cat is not None and cat.current not in seen:
            seen.add(cat.current)
            delays.append(now - (base + cat.current))
        if snap.status.is_terminal:
            break
    out = handle.result(timeout=30)
    assert out == {"sent": samples}, out
    if not delays:
        return [f"5. set_progress -> driver snapshot latency: no value seen in {samples} sent MISS"]
    p50, p95 = pct(delays, 50), pct(delays, 95)
    return [
        f"5. set_progress -> driver snapshot latency (task mode, wait_for_update long-poll): "
        f"p50 {p50 * 1e3:.0f} ms, p95 {p95 * 1e3:.0f} ms, max {max(delays) * 1e3:.0f} ms, "
        f"{len(delays)}/{samples} values seen (goal p95 <= 300 ms) {verdict(p95 <= 0.3)}"
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer samples: about 1 minute")
    args = parser.parse_args()
    if args.quick:
        cfg = {"trivial": 30, "sleep": 3, "rounds": 2, "agg_reps": 3, "batches": 200, "latency": 30}
    else:
        cfg = {"trivial": 100, "sleep": 9, "rounds": 6, "agg_reps": 5, "batches": 300, "latency": 50}
    n_steps, n_reuse = 5, 20

    import ray

    import bench.overhead as ours  # the actions, by reference (workers import bench.overhead)
    from synapse_ray import RayExecutor

    by_value = SimpleNamespace(TrivialAction=TrivialAction, StepsAction=StepsAction)  # from __main__

    started = time.perf_counter()
    cpu0 = cpu_times()
    print(f"command: {command_line()}")
    print(
        f"ray {ray.__version__}, python {sys.version.split()[0]}, cpu count {os.cpu_count()}, "
        f"load average {load_average()}, mode {'quick' if args.quick else 'full'}"
    )
    print(precompile())
    ray.init(address="local", num_cpus=4, include_dashboard=False)  # private: never join a running cluster
    print(f"ray.init: {time.perf_counter() - started:.1f} s", flush=True)

    # The workers must get both kinds of action: by reference and by value.
    task = RayExecutor(mode="task")
    assert task.execute(ours.TrivialAction, {}) == {"ok": True}
    assert task.execute(by_value.TrivialAction, {}) == {"ok": True}
    assert ray.get(ray.remote(touch).remote()) != os.getpid()

    sections = [
        lambda: fig_trivial(ray, ours, by_value, task, cfg["trivial"]),
        lambda: fig_sleep(ray, ours, task, cfg["sleep"]),
        lambda: fig_steps(ray, ours, by_value, cfg["rounds"], n_steps, n_reuse),
        lambda: fig_aggregator(ray, cfg["agg_reps"], cfg["batches"]),
        lambda: fig_latency(ours, task, cfg["latency"]),
    ]
    for run in sections:
        t0 = time.perf_counter()
        for line in run():
            print(line, flush=True)
        print(f"    ({time.perf_counter() - t0:.1f} s)", flush=True)
    ray.shutdown()
    print(
        f"total: {time.perf_counter() - started:.1f} s; whole machine during the run: "
        f"{cpu_usage(cpu0, cpu_times())} of {os.cpu_count()} cpus; load average {load_average()}"
    )


if __name__ == "__main__":
    main()

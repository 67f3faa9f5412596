"""An action that fans out over shards; its params choose how shards behave.

Shards record what happened (pid, node, attempt, times) in a notes file, so
tests can see where and when each shard ran, not only what came back.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field

from synapse_ray import (
    BaseStep,
    BaseTrainAction,
    RetryPolicy,
    StepRegistry,
    StepResult,
    TrainContext,
    map_shards,
)


class ShardParams(BaseModel):
    n: int = 8
    log: str | None = None  # notes file
    pulls: str | None = None  # shards come from a generator that notes each pull here
    fail: list[int] = Field(default_factory=list)  # these shards always raise ValueError
    flaky: list[int] = Field(default_factory=list)  # these raise on their first attempt
    crash: list[int] = Field(default_factory=list)  # these exit hard on their first attempt
    sleep_s: float = 0.0
    progress_steps: int = 0  # each shard reports this many progress updates over its sleep
    retry_attempts: int = 1
    allow_failures: int = 0
    max_in_flight: int | None = None
    num_cpus: float = 1
    ordered: bool = True
    pool: bool = False  # fn is a class: built once per worker


def _note(path: str | None, **fields: Any) -> None:
    if path:
        node = None
        ray = sys.modules.get("ray")  # in a Ray worker: which node; never imported for core tests
        if ray is not None and ray.is_initialized():
            node = ray.get_runtime_context().get_node_id()
        with open(path, "a") as fh:
            fh.write(json.dumps({**fields, "pid": os.getpid(), "node": node, "t": time.time()}) + "\n")


def read_notes(path: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in open(path).read().splitlines()] if os.path.exists(path) else []


def work(p: ShardParams, x: int, ctx: Any) -> dict[str, int]:
    _note(p.log, event="start", index=ctx.index, attempt=ctx.attempt)
    if x in p.crash and ctx.attempt == 1:
        os._exit(1)
    if x in p.flaky and ctx.attempt == 1:
        raise RuntimeError(f"flaky shard {x}")
    if x in p.fail:
        raise ValueError(f"bad shard {x}")
    steps = max(1, p.progress_steps)
    for i in range(steps):
        if p.sleep_s:
            time.sleep(p.sleep_s / steps)
        if p.progress_steps:
            ctx.set_progress(i + 1, steps)
    _note(p.log, event="end", index=ctx.index, attempt=ctx.attempt)
    return {"x": x, "square": x * x}


class Squarer:
    """A class fn: its __init__ notes each build (to the file in $SHARD_TEST_LOG, set via the
    executor's env) so tests can count builds per worker."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        _note(os.environ.get("SHARD_TEST_LOG"), event="init")

    def __call__(self, x: int) -> dict[str, int]:
        return {"x": x, "square": x * x, "pid": self.pid}


def pulled(p: ShardParams) -> Iterator[int]:
    for x in range(p.n):
        _note(p.pulls, event="pull", index=x)
        yield x


class ShardAction(BaseTrainAction[ShardParams]):
    action_name = "shard_action"

    def execute(self) -> dict[str, Any]:
        p = self.params
        options: dict[str, Any] = {
            "max_in_flight": p.max_in_flight,
            "num_cpus": p.num_cpus,
            "ordered": p.ordered,
            "allow_failures": p.allow_failures,
            "retry": RetryPolicy(max_attempts=p.retry_attempts),
        }
        if p.pool:
            results = map_shards(self, Squarer, range(p.n), **options)
        else:
            shards = pulled(p) if p.pulls else range(p.n)
            results = map_shards(self, functools.partial(work, p), shards, **options)
        return {"results": list(results), "failures": [f.index for f in results.failures]}


class DataParams(BaseModel):
    rows: int = 200
    blocks: int = 20
    block_sleep_s: float = 0.0
    # read the rows (one integer a line) from the text files here instead: Ray Data cannot
    # count lines before it reads them, so the pipeline has no row estimate
    text_dir: str | None = None


def _parse(row: dict[str, Any]) -> dict[str, Any]:
    return {"x": int(row["text"])}


def _double(batch: dict[str, Any], sleep_s: float) -> dict[str, Any]:
    time.sleep(sleep_s)
    batch["x"] = batch["x"] * 2
    return batch


class DataAction(BaseTrainAction[DataParams]):
    """Builds a Ray Data pipeline; its rows report under the 'decode' category."""

    action_name = "data_action"

    def execute(self) -> dict[str, Any]:
        import ray

        from synapse_ray import materialize_dataset

        p = self.params
        if p.text_dir:
            ds = ray.data.read_text(p.text_dir, override_num_blocks=p.blocks).map(_parse)
        else:
            ds = ray.data.from_items([{"x": i} for i in range(p.rows)], override_num_blocks=p.blocks)
        ds = ds.map_batches(functools.partial(_double, sleep_s=p.block_sleep_s))
        done = materialize_dataset(self, ds, category="decode")
        return {"count": done.count(), "sum": sum(row["x"] for row in done.take_all())}


class DecodeStep(BaseStep[TrainContext]):
    """Materializes a pipeline into the context: the next step reads its blocks."""

    def execute(self, ctx: TrainContext) -> StepResult:
        import ray

        from synapse_ray import materialize_dataset

        # 64 KiB a row: each block is well above what Ray inlines (100 KiB), so it lives in
        # the object store, owned by this step's process
        items = [{"x": i, "pad": b"\0" * 65536} for i in range(ctx.params.rows)]
        ds = ray.data.from_items(items, override_num_blocks=4)
        ctx.decoded = materialize_dataset(ctx, ds.map_batches(functools.partial(_double, sleep_s=0.0)))
        return StepResult()


class ConsumeStep(BaseStep[TrainContext]):
    def execute(self, ctx: TrainContext) -> StepResult:
        ctx.count = ctx.decoded.count()
        ctx.total = sum(row["x"] for row in ctx.decoded.take_all())
        return StepResult()


class DataStepsAction(BaseTrainAction[DataParams]):
    """A step materializes a dataset, a later step on another worker reads it."""

    action_name = "data_steps_action"

    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        registry.register(DecodeStep())
        registry.register(ConsumeStep())

    def summarize(self, ctx: TrainContext) -> dict[str, Any]:
        return {"count": ctx.count, "sum": ctx.total}

"""Steps that hand each other an array and an artifact dir; they report what they saw."""

from __future__ import annotations

import os
import shutil
from typing import Any

import numpy as np
from pydantic import BaseModel

from synapse_ray import BaseStep, BaseTrainAction, StepRegistry, StepResources, StepResult, TrainContext


class DataParams(BaseModel):
    mib: int = 8
    make_on: dict[str, float] | None = None  # resources pinning the producer
    read_on: dict[str, float] | None = None  # resources pinning the readers
    readers: int = 2
    artifact: bool = True
    dangling_link: bool = False
    wipe_source: bool = False  # delete the producer's files (a node whose disk others cannot see)


def node() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class MakeStep(BaseStep[TrainContext]):
    name = "make"

    def execute(self, ctx: TrainContext) -> StepResult:
        p: DataParams = ctx.params
        ctx.dataset = np.arange(p.mib << 17, dtype=np.float64)  # p.mib MiB
        if p.artifact:
            out = ctx.artifact_dir("checkpoint")
            (out / "weights.bin").write_bytes(bytes(range(256)) * 64)
            (out / "meta").mkdir(exist_ok=True)
            (out / "meta" / "info.txt").write_text(f"made on {node()}")
            if p.dangling_link:
                os.symlink("gone.bin", out / "weights-link.bin")  # inside, but its file is missing
            ctx.model_path = str(out)  # a plain path: valid only where it was written
        return StepResult(data={"node": node(), "pid": os.getpid(), "artifact_path": ctx.model_path})


class WipeSourceStep(BaseStep[TrainContext]):
    """Runs where the producer ran and deletes its files: readers must get them another way."""

    name = "wipe_source"

    def execute(self, ctx: TrainContext) -> StepResult:
        shutil.rmtree(ctx.model_path)
        return StepResult(data={"node": node(), "pid": os.getpid()})


class ReadStep(BaseStep[TrainContext]):
    def __init__(self, name: str) -> None:
        self.name = name  # type: ignore[misc]

    def execute(self, ctx: TrainContext) -> StepResult:
        p: DataParams = ctx.params
        a = ctx.dataset
        seen: dict[str, Any] = {
            "node": node(),
            "pid": os.getpid(),
            "type": type(a).__name__,
            "writeable": bool(a.flags.writeable),
            "owndata": bool(a.flags.owndata),
            "sum": float(a.sum()),
            "nbytes": int(a.nbytes),
        }
        if p.artifact:
            seen["plain_path_exists"] = os.path.exists(os.path.join(ctx.model_path, "weights.bin"))
            path = ctx.artifact_dir("checkpoint")
            seen["artifact_path"] = str(path)
            seen["weights_ok"] = (path / "weights.bin").read_bytes() == bytes(range(256)) * 64
            seen["info"] = (path / "meta" / "info.txt").read_text()
        return StepResult(data=seen)


class DataAction(BaseTrainAction[DataParams]):
    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        p = self.params
        make = MakeStep()
        if p.make_on:
            make.resources = StepResources(resources=p.make_on)  # type: ignore[misc]
        registry.register(make)
        if p.wipe_source:
            wipe = WipeSourceStep()
            wipe.resources = make.resources  # type: ignore[misc]
            registry.register(wipe)
        for i in range(p.readers):
            reader = ReadStep(f"read{i + 1}")
            if p.read_on:
                reader.resources = StepResources(resources=p.read_on)  # type: ignore[misc]
            registry.register(reader)

    def summarize(self, ctx: Any) -> dict[str, Any]:
        # runs on the driver: what it holds for the array, and what each step saw
        return {
            "driver_holds": type(ctx.dataset).__name__,
            "driver_nbytes": getattr(ctx.dataset, "nbytes", None),
            "seen": [r.data for r in ctx.step_results],
        }

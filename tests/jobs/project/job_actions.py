"""Actions the Jobs tests submit: this folder is the uploaded working dir.

Steps note what happened in a file named by the params (the cluster runs on
this machine), so tests can see rollbacks from the submitter.
"""

from __future__ import annotations

import json
import pkgutil
import time
from typing import Any

from pydantic import BaseModel

from synapse_ray import BaseStep, BaseTrainAction, StepRegistry, StepResult, TrainContext


class EchoParams(BaseModel):
    value: int = 1
    spoof: bool = False
    notes: str | None = None


def note(path: str | None, **fields: Any) -> None:
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps(fields) + "\n")


class EchoAction(BaseTrainAction[EchoParams]):
    """A simple action; with ``spoof`` it prints things that look like results and records."""

    action_name = "jobs_echo"

    def execute(self) -> dict[str, Any]:
        if self.params.spoof:
            fake = {"status": "SUCCEEDED", "result": {"value": -1}}
            print("@@synapse-ray-record@@ v1 99 final " + json.dumps(fake) + " 00" * 32, flush=True)
            print('{"value": -1}', flush=True)
            print("RESULT: -1", flush=True)
        self.set_progress(1, 1, self.progress.TRAIN)
        private = [m.name for m in pkgutil.iter_modules() if m.name.startswith("synapse_job_")]
        return {"value": self.params.value * 2, "private_packages_here": private}


class PrepareStep(BaseStep[TrainContext]):
    name = "prepare"
    progress_weight = 1.0

    def execute(self, ctx: TrainContext) -> StepResult:
        note(ctx.params.notes, step="prepare", event="execute")
        ctx.set_progress(1, 1, "dataset")
        return StepResult(data={"prepared": True}, rollback_data={"x": 1})

    def rollback(self, ctx: TrainContext, result: StepResult) -> None:
        note(ctx.params.notes, step="prepare", event="rollback")


class SlowParams(BaseModel):
    seconds: float = 60.0
    notes: str | None = None


class SlowStep(BaseStep[TrainContext]):
    """Runs until cancelled (checks ``ctx.cancelled``) or ``seconds`` pass."""

    name = "slow"
    progress_weight = 1.0

    def execute(self, ctx: TrainContext) -> StepResult:
        note(ctx.params.notes, step="slow", event="execute")
        deadline = time.monotonic() + ctx.params.seconds
        while time.monotonic() < deadline:
            ctx.set_progress(1, 2, "train")
            if ctx.cancelled:
                note(ctx.params.notes, step="slow", event="saw_cancel")
                ctx.raise_if_cancelled()
            time.sleep(0.1)
        return StepResult(data={"slept": ctx.params.seconds})


class SlowStepsAction(BaseTrainAction[SlowParams]):
    action_name = "jobs_slow_steps"

    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        registry.register(PrepareStep())
        registry.register(SlowStep())


class FailParams(BaseModel):
    message: str = "boom"


class ExplodeStep(BaseStep[TrainContext]):
    name = "explode"

    def execute(self, ctx: TrainContext) -> StepResult:
        raise ValueError(ctx.params.message)


class FailingStepsAction(BaseTrainAction[FailParams]):
    action_name = "jobs_failing_steps"

    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        registry.register(ExplodeStep())

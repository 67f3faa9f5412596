"""Small actions and steps the core tests run (importable by target string)."""

from __future__ import annotations

import threading
import time
from typing import Any

from pydantic import BaseModel, ConfigDict

from synapse_ray import (
    BaseAction,
    BaseStep,
    BaseTrainAction,
    RetryPolicy,
    StepRegistry,
    StepResult,
    TrainContext,
)


class AddParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int
    b: int = 1


class AddAction(BaseTrainAction[AddParams]):
    """Simple execute() action reporting every train-action category."""

    def execute(self) -> dict[str, Any]:
        for cat in self.progress.ALL:
            for i in range(1, 5):
                self.set_progress(i, 4, cat)
        self.log_metric("loss", 0.5, category="train")
        self.log("added", {"a": self.params.a})
        return {"sum": self.params.a + self.params.b}


class NoParamsAction(BaseAction):  # type: ignore[type-arg]
    def execute(self) -> int:
        return 1


class NotAnAction:
    pass


class StepParams(BaseModel):
    fail_at: str | None = None
    return_bad: str | None = None
    flaky: int = 0  # times the 'train' step fails before it succeeds
    block_at: str | None = None  # step that waits for cancel
    rollback_fails: str | None = None
    skip: str | None = None
    dataset_id: int | None = None


EVENTS: list[str] = []
EVENTS_LOCK = threading.Lock()
STARTED = threading.Event()


def record(event: str) -> None:
    with EVENTS_LOCK:
        EVENTS.append(event)


class Flaky(Exception):
    pass


class RecordingStep(BaseStep[TrainContext]):
    def __init__(self, name: str, weight: float = 1.0, retry: RetryPolicy | None = None) -> None:
        self.name = name  # type: ignore[misc]
        self.progress_weight = weight  # type: ignore[misc]
        self.retry = retry  # type: ignore[misc]

    def can_skip(self, ctx: TrainContext) -> bool:
        return ctx.params.skip == self.name

    def execute(self, ctx: TrainContext) -> Any:
        p = ctx.params
        record(f"execute:{self.name}:{ctx.attempt}")
        ctx.set_progress(1, 2, self.name)
        if p.block_at == self.name:
            STARTED.set()
            deadline = time.monotonic() + 10
            while not ctx.cancelled and time.monotonic() < deadline:
                time.sleep(0.01)
            ctx.raise_if_cancelled()
        if p.flaky and self.name == "train" and ctx.attempt <= p.flaky:
            raise Flaky(f"flaky attempt {ctx.attempt}")
        if p.fail_at == self.name:
            raise ValueError(f"boom in {self.name}")
        if p.return_bad == self.name:
            return {"not": "a StepResult"}
        if p.return_bad == f"{self.name}:false":
            return StepResult(success=False, error="declined")
        ctx.set_progress(2, 2, self.name)
        if self.name == "upload":
            ctx.model = {"id": 42, "name": "m"}
        return StepResult(data={"step": self.name}, rollback_data={"undo": self.name})

    def rollback(self, ctx: TrainContext, result: StepResult) -> None:
        record(f"rollback:{self.name}")
        if ctx.params.rollback_fails == self.name:
            raise RuntimeError(f"rollback of {self.name} broke")


class ThreeStepAction(BaseTrainAction[StepParams]):
    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        registry.register(RecordingStep("load", 1.0))
        registry.register(RecordingStep("train", 3.0, RetryPolicy(max_attempts=3, retry_on=(Flaky,))))
        registry.register(RecordingStep("upload", 1.0))

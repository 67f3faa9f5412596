"""Actions and steps the Ray tests run; they record what happened in a shared file."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from synapse_ray import (
    BaseStep,
    BaseTrainAction,
    RetryPolicy,
    StepRegistry,
    StepResources,
    StepResult,
    TrainContext,
)


def where() -> dict[str, Any]:
    import ray

    return {"pid": os.getpid(), "node": ray.get_runtime_context().get_node_id()}


def note(path: str | None, **fields: Any) -> None:
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({**fields, **where()}) + "\n")


def read_notes(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path)
    return [json.loads(line) for line in p.read_text().splitlines()] if p.exists() else []


class RayParams(BaseModel):
    log: str | None = None
    fail_at: str | None = None
    crash_once: str | None = None  # marker file: the first attempt exits hard
    wait_cancel_at: str | None = None  # step that loops until cancelled
    ignore_cancel_at: str | None = None  # step that never checks the flag
    pin: dict[str, float] | None = None  # resources for the 'train' step
    slow_train_s: float = 0.0
    upload: bool = False
    dataset_id: int | None = None
    shout: str | None = None  # printed on the worker's stdout
    log_event: str | None = None  # a log entry at the end of execute (it rides back with the result)


class SimpleRayAction(BaseTrainAction[RayParams]):
    def execute(self) -> dict[str, Any]:
        p = self.params
        if p.shout:
            print(p.shout, flush=True)
        note(p.log, event="execute")
        self.set_progress(1, 2, self.progress.TRAIN)
        if p.crash_once and not os.path.exists(p.crash_once):
            Path(p.crash_once).write_text("crashed")
            os._exit(1)
        if p.fail_at == "execute":
            raise KeyError("missing column")
        self.set_progress(2, 2, self.progress.TRAIN)
        if p.log_event:
            self.log(p.log_event, {"attempt": self.runtime_ctx.run_attempt})
        out: dict[str, Any] = {
            "where": where(),
            "has_token": self.runtime_ctx.backend is not None,
            "run_attempt": self.runtime_ctx.run_attempt,
            "env": os.environ.get("SYNAPSE_TEST_ENV"),
        }
        if p.upload:
            model_file = self.runtime_ctx.work_dir / "model.bin"
            model_file.write_bytes(b"weights" * 100)
            out["model_id"] = self.create_model(model_file, name="ray-simple")["id"]
            out["env_has_token"] = any(
                self.runtime_ctx.backend.token.get_secret_value() in v for v in os.environ.values()
            )
        return out


class RecStep(BaseStep[TrainContext]):
    def __init__(
        self, name: str, retry: RetryPolicy | None = None, resources: StepResources | None = None
    ) -> None:
        self.name = name  # type: ignore[misc]
        self.retry = retry  # type: ignore[misc]
        self.resources = resources  # type: ignore[misc]

    def execute(self, ctx: TrainContext) -> StepResult:
        p: RayParams = ctx.params
        note(
            p.log,
            event="execute",
            step=self.name,
            attempt=ctx.attempt,
            seen=list(getattr(ctx, "visited", [])),
            env=os.environ.get("SYNAPSE_TEST_ENV"),
        )
        ctx.set_progress(1, 3, self.name)
        if p.log_event:
            ctx.log(p.log_event, {"step": self.name})
        if p.crash_once == self.name and ctx.attempt == 1:
            os._exit(1)
        if p.wait_cancel_at == self.name:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                ctx.raise_if_cancelled()
                time.sleep(0.02)
        if p.ignore_cancel_at == self.name:
            time.sleep(60)
        if self.name == "train" and p.slow_train_s:
            deadline = time.monotonic() + p.slow_train_s
            i = 0
            while time.monotonic() < deadline:
                i += 1
                ctx.set_progress(min(i, 99), 100, "train")
                time.sleep(0.05)
        if p.fail_at == self.name:
            raise ValueError(f"boom in {self.name}")
        ctx.set_progress(3, 3, self.name)
        ctx.visited = [*getattr(ctx, "visited", []), self.name]
        return StepResult(data={"where": where()}, rollback_data={"step": self.name})

    def rollback(self, ctx: TrainContext, result: StepResult) -> None:
        note(ctx.params.log, event="rollback", step=self.name)


class StepRayAction(BaseTrainAction[RayParams]):
    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        p = self.params
        crash_policy = RetryPolicy(max_attempts=2)
        registry.register(RecStep("load"))
        registry.register(
            RecStep("train", retry=crash_policy, resources=StepResources(resources=p.pin) if p.pin else None)
        )
        registry.register(RecStep("upload"))


class SetupFailsAction(StepRayAction):
    """A step-based action whose own setup fails: a run that fails, in every executor alike."""

    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        raise KeyError("no such step config")


class StepRayActionPlain(StepRayAction):
    """The same three steps, none with a retry policy: crash retries alone decide."""

    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        for name in ("load", "train", "upload"):
            registry.register(RecStep(name))

    def summarize(self, ctx: TrainContext) -> dict[str, Any]:
        return {**super().summarize(ctx), "visited": list(getattr(ctx, "visited", []))}


class NoRollbackStep(BaseStep[TrainContext]):
    name = "plain"

    def execute(self, ctx: TrainContext) -> StepResult:
        return StepResult(data={"where": where()})


class NoRollbackAction(BaseTrainAction[RayParams]):
    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        registry.register(NoRollbackStep())


class LockContextAction(StepRayAction):
    def create_context(self) -> TrainContext:
        import threading

        ctx = super().create_context()
        ctx.lock = threading.Lock()
        return ctx


class BackoffAction(BaseTrainAction[RayParams]):
    """Calls the backend, which (in the test) answers 503 with a long backoff."""

    def execute(self) -> dict[str, Any]:
        note(self.params.log, event="execute")
        return dict(self.client.get_job(1))


class CountingStepAction(StepRayActionPlain):
    """Counts, in the process that calls them, how often its user code builds the run."""

    calls: ClassVar[list[str]] = []

    def setup_steps(self, registry: StepRegistry[TrainContext]) -> None:
        type(self).calls.append("setup_steps")
        super().setup_steps(registry)

    def create_context(self) -> TrainContext:
        type(self).calls.append("create_context")
        return super().create_context()

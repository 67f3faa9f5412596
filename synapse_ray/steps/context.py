"""Step contexts: the value handed from step to step.

A context crosses process boundaries when steps run in their own actors, so
it pickles attribute by attribute: an attribute that cannot be pickled is
named in the error instead of surfacing as an anonymous pickling failure
deep inside Ray. Each attribute is pickled once, its large buffers out of
band (``runtime/pickling.py``): whatever pickles the context next copies
only the small pickle streams and hands the buffers on without copying them.
What travels back from a step is its changes only (``changes.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synapse_ray.errors import ContextPicklingError
from synapse_ray.runtime.context import RuntimeContext
from synapse_ray.runtime.pickling import Pickled
from synapse_ray.steps.artifacts import ArtifactRecord, artifact_path, materialize
from synapse_ray.steps.changes import pickle_attribute
from synapse_ray.steps.context_api import StepContextAPI
from synapse_ray.steps.step import StepResult

_TRANSIENT = frozenset({"_opened_artifacts"})
_PACKED = "__values__"


@dataclass
class BaseStepContext(StepContextAPI):
    """Shared state for a step-based run; steps read and write its attributes.

    Reporting calls (``log``, ``set_progress``, ``set_metrics``, ``log_message``,
    ``log_dev_event``) come from ``StepContextAPI``.
    """

    runtime_ctx: RuntimeContext = field(default_factory=RuntimeContext)
    params: Any = None
    step_results: list[StepResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    current_step: str | None = None
    attempt: int = 1
    # Files that follow their steps (see ``artifact_dir``): name -> where the files are.
    artifacts: dict[str, ArtifactRecord] = field(default_factory=dict, kw_only=True)

    # -- conveniences for steps ----------------------------------------
    @property
    def cancelled(self) -> bool:
        return self.runtime_ctx.cancelled

    def raise_if_cancelled(self) -> None:
        self.runtime_ctx.raise_if_cancelled()

    @property
    def logger(self) -> Any:
        return self.runtime_ctx.logger

    def map_shards(self, fn: Any, shards: Any, **options: Any) -> Any:
        """Run ``fn`` on every shard, scaled out by the executor; see ``synapse_ray.parallel``."""
        from synapse_ray.parallel import map_shards

        return map_shards(self, fn, shards, **options)

    def iter_shards(self, fn: Any, shards: Any, **options: Any) -> Any:
        """The streaming form of ``map_shards``: ``ShardResult(index, value)`` as results are ready."""
        from synapse_ray.parallel import iter_shards

        return iter_shards(self, fn, shards, **options)

    @property
    def client(self) -> Any:
        return self.runtime_ctx.client

    # -- files that follow their steps ----------------------------------
    def artifact_dir(self, name: str) -> Path:
        """A directory for files a later step will read, on whatever node it runs.

        Write a checkpoint or a converted dataset here; a later step calls
        ``artifact_dir`` with the same name and finds the same files, copied
        to its node first when it runs elsewhere (see docs/concepts.md,
        "Data between steps"). A name that leaves the artifact dir is refused.
        """
        path = artifact_path(self.runtime_ctx.work_dir, name)
        record = self.artifacts.get(name)
        if record is not None:
            materialize(record, path)
        path.mkdir(parents=True, exist_ok=True)
        self.__dict__.setdefault("_opened_artifacts", set()).add(name)
        return path

    # -- value semantics -----------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        """The runtime context as itself, every other attribute in one ``Pickled``.

        One pickler pass over all values (not one per attribute) halves what a
        step's shipping costs; large buffers still go out of band and stored
        values aside. When it fails, each attribute is tried alone to name the
        one that cannot be pickled.
        """
        values = {k: v for k, v in self.__dict__.items() if k not in _TRANSIENT and k != "runtime_ctx"}
        try:
            packed = Pickled.of(values)
        except Exception as exc:  # noqa: BLE001 - named below
            owner = type(self).__name__
            for key, value in values.items():
                pickle_attribute(owner, key, value)  # raises ContextPicklingError naming it
            raise ContextPicklingError(f"{owner} cannot be pickled: {exc}", owner=owner) from None
        return {"runtime_ctx": self.__dict__.get("runtime_ctx"), _PACKED: packed}

    def __setstate__(self, state: dict[str, Any]) -> None:
        values = state.pop(_PACKED, None)  # unpickled to the dict of values already
        self.__dict__.update(state)
        if values is not None:
            self.__dict__.update(values)


@dataclass
class TrainContext(BaseStepContext):
    """Context of a step-based train action: the dataset in, the model out."""

    dataset: Any = None
    model_path: str | None = None
    model: dict[str, Any] | None = None


def check_picklable(ctx: Any, step: str | None = None) -> None:
    """Fail early, naming the step and attribute, before a context is shipped."""
    try:
        if isinstance(ctx, BaseStepContext):
            ctx.__getstate__()
        else:
            pickle_attribute(type(ctx).__name__, "<context>", ctx)
    except ContextPicklingError as exc:
        if step is None:
            raise
        raise ContextPicklingError(
            f"Step '{step}': {exc.message}", attribute=exc.fields.get("attribute"), step=step
        ) from exc

"""Step contexts: the value handed from step to step.

A context crosses process boundaries when steps run in their own actors, so
it pickles attribute by attribute: an attribute that cannot be pickled is
named in the error instead of surfacing as an anonymous pickling failure
deep inside Ray.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from synapse_ray.errors import ContextPicklingError
from synapse_ray.runtime import pickling
from synapse_ray.runtime.context import RuntimeContext
from synapse_ray.steps.context_api import StepContextAPI
from synapse_ray.steps.step import StepResult


def _dumps(owner: str, key: str, value: Any) -> bytes:
    try:
        return pickling.dumps(value)
    except Exception as exc:  # noqa: BLE001 - named below
        raise ContextPicklingError(
            f"{owner} attribute '{key}' ({type(value).__name__}) cannot be pickled: {exc}. "
            "Contexts cross process boundaries; keep plain values (paths, ids, arrays) in them "
            "and rebuild live objects (clients, locks, open files) inside the step.",
            attribute=key,
            owner=owner,
        ) from None


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

    # -- conveniences for steps ----------------------------------------
    @property
    def cancelled(self) -> bool:
        return self.runtime_ctx.cancelled

    def raise_if_cancelled(self) -> None:
        self.runtime_ctx.raise_if_cancelled()

    @property
    def logger(self) -> Any:
        return self.runtime_ctx.logger

    @property
    def client(self) -> Any:
        return self.runtime_ctx.client

    # -- value semantics -----------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        owner = type(self).__name__
        return {
            key: value if key == "runtime_ctx" else _dumps(owner, key, value)
            for key, value in self.__dict__.items()
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(
            {key: value if key == "runtime_ctx" else pickling.loads(value) for key, value in state.items()}
        )


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
            _dumps(type(ctx).__name__, "<context>", ctx)
    except ContextPicklingError as exc:
        if step is None:
            raise
        raise ContextPicklingError(
            f"Step '{step}': {exc.message}", attribute=exc.fields.get("attribute"), step=step
        ) from exc

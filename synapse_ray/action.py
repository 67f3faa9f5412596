"""``BaseAction[P]``: a params model plus either ``execute()`` or steps.

The action object is built on the driver from validated params, and again
wherever it runs (a Ray task rebuilds it from the same values), so it holds
only the params and the runtime context.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, ClassVar, Generic, TypeVar, get_args, get_origin

from pydantic import BaseModel, ValidationError

from synapse_ray.errors import ConfigurationError, ParamsValidationError
from synapse_ray.runtime.context import RuntimeContext
from synapse_ray.runtime.logging import redact_processor
from synapse_ray.steps.context import BaseStepContext
from synapse_ray.steps.orchestrator import Orchestrator
from synapse_ray.steps.placement import InProcessPlacement
from synapse_ray.steps.registry import StepRegistry
from synapse_ray.steps.retry import RetryPolicy
from synapse_ray.steps.simple import EXECUTE_STEP, ExecuteStep
from synapse_ray.steps.step import BaseStep

P = TypeVar("P", bound=BaseModel)


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _params_from_generic(cls: type) -> type[BaseModel] | None:
    for klass in cls.__mro__:
        for base in getattr(klass, "__orig_bases__", ()):
            origin = get_origin(base)
            if isinstance(origin, type) and issubclass(origin, BaseAction):
                for arg in get_args(base):
                    if isinstance(arg, type) and issubclass(arg, BaseModel):
                        return arg
    return None


def format_validation_error(model: type[BaseModel], exc: ValidationError) -> str:
    """One line per bad field, without echoing input values (they may be secrets)."""
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ())) or "<root>"
        got = err.get("input")
        kind = f" (got {type(got).__name__})" if err.get("type") != "missing" else ""
        lines.append(f"  {loc}: {err.get('msg')}{kind}")
    return f"Invalid params for {model.__name__}:\n" + "\n".join(lines)


class BaseAction(Generic[P]):
    """Base of every action. Override ``execute`` or register steps in ``setup_steps``."""

    action_name: ClassVar[str] = ""
    category: ClassVar[str] = ""
    params_model: ClassVar[type[BaseModel] | None] = None
    result_model: ClassVar[type[BaseModel] | None] = None
    retry: ClassVar[RetryPolicy | None] = None
    # Simple actions: share of overall progress per category (None: latest update).
    progress_weights: ClassVar[dict[str, float] | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("params_model") is None:
            found = _params_from_generic(cls)
            if found is not None:
                cls.params_model = found
        if not cls.__dict__.get("action_name"):
            cls.action_name = _snake(cls.__name__)

    def __init__(self, params: P | Mapping[str, Any], ctx: RuntimeContext | None = None) -> None:
        self.params: P = self.validate_params(params)
        self.runtime_ctx = ctx if ctx is not None else RuntimeContext(action_name=self.action_name)
        if not self.runtime_ctx.action_name:
            self.runtime_ctx.action_name = self.action_name

    @property
    def ctx(self) -> RuntimeContext:
        return self.runtime_ctx

    # -- params --------------------------------------------------------
    @classmethod
    def validate_params(cls, params: Any) -> Any:
        """Validate before anything runs; errors name every bad field."""
        model = cls.params_model
        if model is None:
            raise ConfigurationError(
                f"Action {cls.__name__} has no params model: subclass "
                f"{cls.__mro__[1].__name__}[YourParams] or set params_model = YourParams",
                action=cls.__name__,
            )
        if isinstance(params, model):
            return params
        if isinstance(params, BaseModel):
            params = params.model_dump()
        if params is None:
            params = {}
        if not isinstance(params, Mapping):
            raise ParamsValidationError(
                f"Invalid params for {model.__name__}: expected a JSON object (dict), "
                f"got {type(params).__name__}",
                errors=[],
            )
        try:
            return model.model_validate(dict(params))
        except ValidationError as exc:
            errors = [
                {"field": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
                for e in exc.errors()
            ]
            raise ParamsValidationError(format_validation_error(model, exc), errors=errors) from None

    @classmethod
    def dispatch(cls, params: Mapping[str, Any], ctx: RuntimeContext | None = None) -> BaseAction[P]:
        """Validate ``params`` and build the action; nothing runs yet."""
        return cls(cls.validate_params(params), ctx)

    # -- workflow ------------------------------------------------------
    def setup_steps(self, registry: StepRegistry[Any]) -> None:
        """Register steps here for a step-based action. Default: none (use execute)."""
        return None

    @classmethod
    def is_step_based(cls) -> bool:
        """Whether the class registers steps: decided without running user code."""
        return cls.setup_steps is not BaseAction.setup_steps

    def create_context(self) -> BaseStepContext:
        return BaseStepContext(runtime_ctx=self.runtime_ctx, params=self.params)

    def execute(self) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} must override execute() or register steps in setup_steps()"
        )

    def build_registry(self) -> StepRegistry[Any]:
        registry: StepRegistry[Any] = StepRegistry()
        self.setup_steps(registry)
        return registry

    def prepare_run(self) -> tuple[list[BaseStep[Any]], BaseStepContext, bool]:
        """This run's steps and context, built once: ``(steps, context, step_based)``.

        An executor that validates them before starting (picklability,
        resources) runs the very same objects; user code runs once.
        """
        prepared = getattr(self, "_prepared", None)
        if prepared is None:
            registry = self.build_registry()
            steps = registry.get_steps() if registry else [ExecuteStep(self)]
            prepared = self._prepared = (steps, self.create_context(), bool(registry))
        return prepared

    def run(self) -> Any:
        """Run the registered steps, or ``execute()`` as a one-step plan, through the orchestrator.

        Where each step executes is the runtime context's placement (in this
        process unless an executor plugged in another).
        """
        steps, ctx, step_based = self.prepare_run()
        placement = self.runtime_ctx.step_placement or InProcessPlacement()
        summary = Orchestrator(steps, placement).run(ctx)
        if step_based:
            out = summary.as_dict()
            out.update(self.summarize(ctx))
            return out
        return self.check_result(summary.results[EXECUTE_STEP].data["value"])

    def summarize(self, ctx: BaseStepContext) -> dict[str, Any]:
        """Extra fields for the step-based result; train actions add the model."""
        return {}

    def check_result(self, result: Any) -> Any:
        if self.result_model is None or isinstance(result, self.result_model):
            return result
        try:
            return self.result_model.model_validate(result)
        except ValidationError as exc:
            raise ConfigurationError(
                f"Action {type(self).__name__} returned a result that does not match "
                f"result_model: {format_validation_error(self.result_model, exc)}"
            ) from None

    # -- progress, logs, metrics ---------------------------------------
    def set_progress(self, current: float, total: float, category: str | None = None) -> None:
        self.runtime_ctx.progress.update(category or "default", current, total)

    def log(self, event: str, data: Mapping[str, Any] | None = None) -> None:
        payload = dict(data or {})
        self.runtime_ctx.logger.info(event, **payload)
        # the entry is kept by the aggregator and shown by handle.logs(): redact it like a log line
        self.runtime_ctx.progress.log_entry(redact_processor(None, "info", {"event": event, "data": payload}))

    def log_metric(self, name: str, value: Any, category: str | None = None) -> None:
        key = f"{category}.{name}" if category else name
        self.runtime_ctx.progress.metric({key: value})

    def set_metrics(self, values: Mapping[str, Any], category: str | None = None) -> None:
        prefix = f"{category}." if category else ""
        self.runtime_ctx.progress.metric({f"{prefix}{k}": v for k, v in values.items()})

    def __repr__(self) -> str:
        return f"<{type(self).__name__} action={self.action_name!r} run_id={self.runtime_ctx.run_id!r}>"

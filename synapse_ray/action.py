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

from synapse_ray.errors import ArgumentTypeError, ConfigurationError, ParamsValidationError
from synapse_ray.runtime.context import RuntimeContext
from synapse_ray.runtime.logging import get_logger
from synapse_ray.steps.context import BaseStepContext
from synapse_ray.steps.orchestrator import Orchestrator
from synapse_ray.steps.params import params_dict
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
    # A result that does not match result_model is logged and returned (as upstream);
    # True fails the run instead (also settable per run: Executor(strict_result=True)).
    strict_result: ClassVar[bool] = False
    # Upstream's type markers (synapse_ray.types): declarations only.
    input_type: ClassVar[type | None] = None
    output_type: ClassVar[type | None] = None
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

    @property
    def logger(self) -> Any:
        """The run's structlog logger, bound with run, action, step and attempt."""
        return self.runtime_ctx.logger

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
        """Steps get the params as a dict (as upstream), readable as attributes too."""
        return BaseStepContext(runtime_ctx=self.runtime_ctx, params=params_dict(self.params))

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
        """Validate against ``result_model``: a valid result comes back as the model; a mismatch
        is a warning and the result is returned unchanged (as upstream), unless
        ``strict_result`` is set on the action or the run, which fails it."""
        model = self.result_model
        if model is None or not (isinstance(model, type) and issubclass(model, BaseModel)):
            return result  # upstream's NoResult marker (or none): nothing to check
        if isinstance(result, model):
            return result
        try:
            validated = model.model_validate(result)
        except ValidationError as exc:
            message = (
                f"Action {type(self).__name__} returned a result that does not match "
                f"result_model: {format_validation_error(model, exc)}"
            )
            if self.strict_result or self.runtime_ctx.strict_result:
                raise ConfigurationError(message) from None
            get_logger("synapse_ray").warning("result_mismatch", action=self.action_name, detail=message)
            return result
        return validated

    # -- progress, logs, metrics (all go to the run's single writer) ----
    def set_progress(self, current: float, total: float, category: str | None = None) -> None:
        self.runtime_ctx.progress.update(category or "default", current, total)

    def log(self, event: str, data: Mapping[str, Any] | None = None, file: str | None = None) -> None:
        """A log entry (shown by ``handle.logs()``, sent to the job's logs); ``file`` goes with it."""
        self.runtime_ctx.log(event, dict(data or {}), file)

    def log_message(self, message: str | dict[str, str], level: Any = "info", **fmt: Any) -> None:
        self.runtime_ctx.log_message(message, level, **fmt)

    def log_dev_event(self, message: str, data: dict[str, Any] | None = None) -> None:
        self.runtime_ctx.log_dev_event(message, data)

    def log_metric(self, *args: Any, **kwargs: Any) -> None:
        """Two call shapes: upstream's ``log_metric(category, key, value, **metrics)`` (a metric
        timeline entry plus latest values) and ours, ``log_metric(name, value, category=None)``."""
        if len(args) >= 3 or "key" in kwargs or (len(args) == 2 and "value" in kwargs):
            names = ("category", "key", "value")
            bound = dict(zip(names, args, strict=False))
            for name in names[len(args) :]:
                if name not in kwargs:
                    raise ArgumentTypeError(f"log_metric() missing argument {name!r}")
                bound[name] = kwargs.pop(name)
            self.runtime_ctx.log_metric(bound["category"], bound["key"], bound["value"], **kwargs)
            return
        if len(args) != 2 and not (
            {"name", "value"} <= kwargs.keys() or (len(args) == 1 and "value" in kwargs)
        ):
            raise ArgumentTypeError(
                "log_metric(category, key, value, **metrics) or log_metric(name, value, category=None)"
            )
        name = args[0] if args else kwargs.pop("name")
        value = args[1] if len(args) > 1 else kwargs.pop("value")
        category = kwargs.pop("category", None)
        self.runtime_ctx.set_metrics({name: value, **kwargs}, category)  # extra keywords are more metrics

    def set_metrics(self, values: Mapping[str, Any], category: str | None = None) -> None:
        self.runtime_ctx.set_metrics(dict(values), category)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} action={self.action_name!r} run_id={self.runtime_ctx.run_id!r}>"

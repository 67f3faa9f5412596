"""synapse_ray: run ML train actions in-process, on Ray, or as Ray Jobs.

Public names only; everything else is an implementation detail.
"""

from synapse_ray.action import BaseAction
from synapse_ray.backend import BackendClient, BackendSpec
from synapse_ray.errors import (
    ActionError,
    ConfigurationError,
    ContextPicklingError,
    ParamsValidationError,
    RunCancelledError,
    StepError,
    StepResultError,
    SynapseRayError,
    TargetError,
    WorkerCrashedError,
)
from synapse_ray.executors.base import Executor, RunHandle
from synapse_ray.executors.local import LocalExecutor
from synapse_ray.executors.ray_executor import RayExecutor, RayRunHandle
from synapse_ray.runtime.context import RuntimeContext
from synapse_ray.runtime.progress import CategoryProgress, ProgressSnapshot, StepProgress
from synapse_ray.runtime.status import RunStatus, StepStatus
from synapse_ray.steps.context import BaseStepContext, TrainContext
from synapse_ray.steps.registry import StepRegistry
from synapse_ray.steps.retry import RetryPolicy
from synapse_ray.steps.step import BaseStep, StepResources, StepResult
from synapse_ray.targets import load_action
from synapse_ray.train import BaseTrainAction, TrainProgressCategories

__version__ = "0.1.0"

__all__ = [
    "ActionError",
    "BackendClient",
    "BackendSpec",
    "LocalBackendServer",
    "RayExecutor",
    "RayRunHandle",
    "WorkerCrashedError",
    "BaseAction",
    "BaseStep",
    "BaseStepContext",
    "BaseTrainAction",
    "CategoryProgress",
    "ConfigurationError",
    "ContextPicklingError",
    "Executor",
    "LocalExecutor",
    "ParamsValidationError",
    "ProgressSnapshot",
    "RetryPolicy",
    "RunCancelledError",
    "RunHandle",
    "RunStatus",
    "RuntimeContext",
    "StepError",
    "StepProgress",
    "StepRegistry",
    "StepResources",
    "StepResult",
    "StepResultError",
    "StepStatus",
    "SynapseRayError",
    "TargetError",
    "TrainContext",
    "TrainProgressCategories",
    "load_action",
    "__version__",
]


def __getattr__(name: str) -> object:
    """``LocalBackendServer`` pulls in aiohttp: loaded on first use, not by every worker."""
    if name == "LocalBackendServer":
        from synapse_ray.backend.server import LocalBackendServer

        return LocalBackendServer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

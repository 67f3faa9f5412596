"""synapse_ray: run ML train actions in-process or on a Ray cluster.

Public names only; everything else is an implementation detail. Names load on
first use: a Ray worker that unpickles one step should not pay for the
backend client, the executors and their dependencies.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from synapse_ray.action import BaseAction
    from synapse_ray.backend import BackendClient, BackendSpec
    from synapse_ray.enums import LogLevel, PluginCategory, RunMethod
    from synapse_ray.errors import (
        ActionError,
        ArgumentTypeError,
        ArtifactError,
        ClusterError,
        ConfigurationError,
        ContextPicklingError,
        ExecutionError,
        NoBackendError,
        ParamsValidationError,
        PluginError,
        ProgressUnavailableError,
        RayTimeoutError,
        RemoteTraceback,
        RunCancelledError,
        RunTimeoutError,
        ShardFailure,
        ShardsFailedError,
        ShardSourceError,
        StepError,
        StepResultError,
        SynapseRayError,
        TargetError,
        ValidationError,
        ValueTransferError,
        WorkerCrashedError,
    )
    from synapse_ray.executors.base import Executor
    from synapse_ray.executors.handle import RunHandle
    from synapse_ray.executors.local import LocalExecutor
    from synapse_ray.executors.ray.data import materialize_dataset
    from synapse_ray.executors.ray.executor import RayExecutor, RayRunHandle
    from synapse_ray.executors.ray.jobs import RayJobExecutor, RayJobHandle
    from synapse_ray.executors.ray.values import StoredValue
    from synapse_ray.localbackend import LocalBackendServer
    from synapse_ray.parallel import ShardContext, ShardResult, iter_shards, map_shards
    from synapse_ray.runtime.context import RuntimeContext
    from synapse_ray.runtime.plugin_env import PluginEnvironment
    from synapse_ray.runtime.progress import CategoryProgress, ProgressSnapshot, ShardCounts, StepProgress
    from synapse_ray.runtime.status import RunStatus, StepStatus
    from synapse_ray.steps.context import BaseStepContext, TrainContext
    from synapse_ray.steps.orchestrator import Orchestrator
    from synapse_ray.steps.registry import StepRegistry
    from synapse_ray.steps.retry import RetryPolicy
    from synapse_ray.steps.step import BaseStep, StepResources, StepResult
    from synapse_ray.steps.wrappers import LoggingStep, TimingStep, ValidationStep
    from synapse_ray.targets import load_action
    from synapse_ray.train import BaseTrainAction, BaseTrainParams, TrainProgressCategories

_EXPORTS = {
    "ActionError": "synapse_ray.errors",
    "ArgumentTypeError": "synapse_ray.errors",
    "ArtifactError": "synapse_ray.errors",
    "StoredValue": "synapse_ray.executors.ray.values",
    "ValueTransferError": "synapse_ray.errors",
    "ClusterError": "synapse_ray.errors",
    "RemoteTraceback": "synapse_ray.errors",
    "BackendClient": "synapse_ray.backend",
    "BackendSpec": "synapse_ray.backend",
    "BaseAction": "synapse_ray.action",
    "BaseStep": "synapse_ray.steps.step",
    "BaseStepContext": "synapse_ray.steps.context",
    "BaseTrainAction": "synapse_ray.train",
    "CategoryProgress": "synapse_ray.runtime.progress",
    "ConfigurationError": "synapse_ray.errors",
    "ContextPicklingError": "synapse_ray.errors",
    "Executor": "synapse_ray.executors.base",
    "LocalBackendServer": "synapse_ray.localbackend",
    "LocalExecutor": "synapse_ray.executors.local",
    "NoBackendError": "synapse_ray.errors",
    "ParamsValidationError": "synapse_ray.errors",
    "ProgressUnavailableError": "synapse_ray.errors",
    "RayTimeoutError": "synapse_ray.errors",
    "RunTimeoutError": "synapse_ray.errors",
    "ProgressSnapshot": "synapse_ray.runtime.progress",
    "RayExecutor": "synapse_ray.executors.ray.executor",
    "RayRunHandle": "synapse_ray.executors.ray.executor",
    "RayJobExecutor": "synapse_ray.executors.ray.jobs",
    "RayJobHandle": "synapse_ray.executors.ray.jobs",
    "RetryPolicy": "synapse_ray.steps.retry",
    "RunCancelledError": "synapse_ray.errors",
    "RunHandle": "synapse_ray.executors.handle",
    "RunStatus": "synapse_ray.runtime.status",
    "RuntimeContext": "synapse_ray.runtime.context",
    "StepError": "synapse_ray.errors",
    "StepProgress": "synapse_ray.runtime.progress",
    "StepRegistry": "synapse_ray.steps.registry",
    "StepResources": "synapse_ray.steps.step",
    "StepResult": "synapse_ray.steps.step",
    "StepResultError": "synapse_ray.errors",
    "StepStatus": "synapse_ray.runtime.status",
    "SynapseRayError": "synapse_ray.errors",
    "TargetError": "synapse_ray.errors",
    "TrainContext": "synapse_ray.steps.context",
    "TrainProgressCategories": "synapse_ray.train",
    "WorkerCrashedError": "synapse_ray.errors",
    "load_action": "synapse_ray.targets",
    # upstream synapse-sdk names (docs/compat.md)
    "BaseTrainParams": "synapse_ray.train",
    "ExecutionError": "synapse_ray.errors",
    "LogLevel": "synapse_ray.enums",
    "Orchestrator": "synapse_ray.steps.orchestrator",
    "PluginCategory": "synapse_ray.enums",
    "PluginEnvironment": "synapse_ray.runtime.plugin_env",
    "PluginError": "synapse_ray.errors",
    "RunMethod": "synapse_ray.enums",
    "ValidationError": "synapse_ray.errors",
    "LoggingStep": "synapse_ray.steps.wrappers",
    "TimingStep": "synapse_ray.steps.wrappers",
    "ValidationStep": "synapse_ray.steps.wrappers",
    "map_shards": "synapse_ray.parallel",
    "materialize_dataset": "synapse_ray.executors.ray.data",
    "iter_shards": "synapse_ray.parallel",
    "ShardContext": "synapse_ray.parallel",
    "ShardResult": "synapse_ray.parallel",
    "ShardCounts": "synapse_ray.runtime.progress",
    "ShardFailure": "synapse_ray.errors",
    "ShardsFailedError": "synapse_ray.errors",
    "ShardSourceError": "synapse_ray.errors",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'synapse_ray' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__version__ = "0.1.0"

__all__ = [
    "ActionError",
    "ArgumentTypeError",
    "ArtifactError",
    "StoredValue",
    "ValueTransferError",
    "ClusterError",
    "RemoteTraceback",
    "BackendClient",
    "BackendSpec",
    "LocalBackendServer",
    "RayExecutor",
    "RayRunHandle",
    "RayJobExecutor",
    "RayJobHandle",
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
    "NoBackendError",
    "ParamsValidationError",
    "ProgressSnapshot",
    "ProgressUnavailableError",
    "RayTimeoutError",
    "RunTimeoutError",
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
    "map_shards",
    "materialize_dataset",
    "iter_shards",
    "ShardContext",
    "ShardResult",
    "ShardCounts",
    "ShardFailure",
    "ShardsFailedError",
    "ShardSourceError",
    "__version__",
    "BaseTrainParams",
    "ExecutionError",
    "LogLevel",
    "Orchestrator",
    "PluginCategory",
    "PluginEnvironment",
    "PluginError",
    "RunMethod",
    "ValidationError",
    "LoggingStep",
    "TimingStep",
    "ValidationStep",
]

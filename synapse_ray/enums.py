"""Upstream SDK enum names, so plugin imports and comparisons resolve.

Plugins written for datamaker's synapse-sdk set ``category =
PluginCategory.NEURAL_NET`` and name run methods; these are string enums, so a
value compares equal to the plain string our own code uses (``"neural_net"``).
"""

from __future__ import annotations

from enum import StrEnum


class PluginCategory(StrEnum):
    """What a plugin does; a train action is ``NEURAL_NET``."""

    NEURAL_NET = "neural_net"
    EXPORT = "export"
    UPLOAD = "upload"
    SMART_TOOL = "smart_tool"
    POST_ANNOTATION = "post_annotation"
    PRE_ANNOTATION = "pre_annotation"
    DATA_VALIDATION = "data_validation"
    CUSTOM = "custom"


class RunMethod(StrEnum):
    """How upstream runs an action. Ours: ``job`` is a Ray Job, ``task`` a Ray task."""

    JOB = "job"
    TASK = "task"
    SERVE = "serve"


class ExecutionMode(StrEnum):
    """Upstream's ``run_plugin`` modes; ours are the executors (local, Ray, Ray Jobs)."""

    LOCAL = "local"
    TASK = "task"
    JOB = "job"


class LogLevel(StrEnum):
    """Level of a log entry (``ctx.log_message(..., level=LogLevel.WARNING)``)."""

    DEBUG = "debug"
    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    DANGER = "danger"
    ERROR = "error"
    CRITICAL = "critical"

"""A simple action as a one-step plan.

An action that overrides ``execute()`` instead of registering steps runs
through the same orchestrator as a step-based one: its retries, crash
retries, cancel, step and run events and error typing come from one place.
Its one step is named ``execute``; a failure raises ``ActionError`` (a
``StepError``) naming the action.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from synapse_ray.steps.step import BaseStep, StepResult

EXECUTE_STEP = "execute"


class ExecuteStep(BaseStep[Any]):
    """Calls ``action.execute()``; its value rides back in ``StepResult.data['value']``.

    Pickles as the action's class and params (not the live action): the far
    side rebuilds the action around the context's own ``RuntimeContext``, so
    the action's progress goes through the reporter that process owns.
    """

    name = EXECUTE_STEP

    def __init__(self, action: Any) -> None:
        self._action: Any = action
        self._cls: type = type(action)
        self._params: Any = action.params
        self.action_name: str = action.action_name
        self.retry = action.retry  # type: ignore[misc]
        self.category_weights: Mapping[str, float] | None = action.progress_weights

    def execute(self, context: Any) -> StepResult:
        action = self._action
        if action is None:
            action = self._action = self._cls(self._params, context.runtime_ctx)
        return StepResult(data={"value": action.execute()})

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_action"] = None
        return state

"""The runtime context an action runs with, in any process.

It is a value: pickling keeps the ids, the environment, the backend spec, the
progress sink and the cancel token; the backend client, the logger and the
step placement are rebuilt (or left out) on the far side. The client is built
on first use in the process that needs it, so a token never travels inside a
live object and each process keeps one connection pool.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synapse_ray.errors import NoBackendError
from synapse_ray.runtime.cancel import CancelToken
from synapse_ray.runtime.logging import configure_logging, get_logger, register_secret
from synapse_ray.runtime.plugin_env import PluginEnvironment
from synapse_ray.runtime.reporter import ProgressReporter
from synapse_ray.runtime.run_log import file_data_uri, format_message, level_name, make_entry

if TYPE_CHECKING:
    from synapse_ray.backend.client import BackendClient
    from synapse_ray.backend.spec import BackendSpec

NO_CLIENT_HINT = (
    "No client in context: this run has no backend configured. Pass backend=BackendSpec(...) to "
    "the executor, set SYNAPSE_HOST and SYNAPSE_ACCESS_TOKEN, or override get_dataset(), "
    "create_model() and get_model() in your action to work without a backend."
)


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


class RuntimeContext:
    """Ids, environment, backend, progress, logging and cancellation for one run."""

    def __init__(
        self,
        run_id: str | None = None,
        job_id: str | None = None,
        env: dict[str, str] | None = None,
        backend: BackendSpec | None = None,
        progress: ProgressReporter | None = None,
        cancel: CancelToken | None = None,
        action_name: str = "",
        work_dir: str | None = None,
        checkpoint: dict[str, Any] | None = None,
        strict_result: bool = False,
        shard_runner: Any = None,
    ) -> None:
        self.run_id = run_id or new_run_id()
        self.job_id = job_id
        self.env = PluginEnvironment(env or {})
        self.backend = backend
        self.progress = progress or ProgressReporter()
        self.cancel_token = cancel or CancelToken()
        self.action_name = action_name
        self._work_dir = work_dir
        # A resolved checkpoint ({category, path, id, name}) handed in by whoever
        # started the run; get_checkpoint() returns it instead of fetching one.
        self.checkpoint = checkpoint
        # Fail (instead of warn) when a result does not match the action's result_model.
        self.strict_result = strict_result
        # Where ``map_shards`` runs shards (see parallel.py): set by the executor, a value
        # that travels to workers; None runs them in this process.
        self.shard_runner = shard_runner
        self.step: str | None = None
        self.attempt = 1
        # Driver-only: where the orchestrator runs steps. Never pickled.
        self.step_placement: Any = None
        self._client: BackendClient | None = None
        if backend is not None:
            register_secret(backend.token)
        self._logger: Any = None

    @property
    def logger(self) -> Any:
        """structlog logger bound with run, action, step and attempt (built on first use)."""
        if self._logger is None:
            self._logger = get_logger(
                "synapse_ray",
                run_id=self.run_id,
                action=self.action_name,
                step=self.step,
                attempt=self.attempt,
            )
        return self._logger

    # -- backend -------------------------------------------------------
    @property
    def client(self) -> BackendClient:
        if self._client is None:
            if self.backend is None:
                raise NoBackendError(NO_CLIENT_HINT)
            from synapse_ray.backend.client import get_client

            configure_logging()  # the client logs: in a worker, our pipeline must be in place first
            self._client = get_client(self.backend)
        return self._client

    @property
    def has_backend(self) -> bool:
        return self.backend is not None

    # -- steps, progress, cancel ---------------------------------------
    @property
    def run_attempt(self) -> int:
        """Which try of the whole run this is (1 unless a crashed Ray task was retried)."""
        return self.progress.run_attempt

    @run_attempt.setter
    def run_attempt(self, value: int) -> None:
        self.progress.run_attempt = value

    def bind_step(self, step: str | None, attempt: int = 1) -> None:
        self.step, self.attempt = step, attempt
        self._logger = None

    def set_progress(self, current: float, total: float, category: str | None = None) -> None:
        self.progress.update(category or "default", current, total)

    # -- logs and metrics (upstream's RuntimeContext surface) -------------
    def log(
        self, event: str, data: dict[str, Any] | None = None, file: str | None = None, level: Any = "info"
    ) -> None:
        """One log entry to the run's writer (display tail, backend ``logs/``); never blocks.

        ``file`` is attached to the entry (read here, where it exists) when the
        run has a backend job to send it to; otherwise only its path is kept.
        """
        lvl = level_name(level)
        entry = make_entry(event, data, job=self.job_id, step=self.step, level=lvl)
        if file is not None:
            attached = file_data_uri(file) if self.job_id is not None and self.backend is not None else None
            entry["file"] = attached if attached is not None else str(file)
        getattr(self.logger, "debug" if lvl == "debug" else "info")(event, data=entry["data"])
        self.progress.log_entry(entry)

    def set_metrics(self, values: dict[str, Any], category: str | None = None) -> None:
        """Latest metric values; shown as ``category.key`` and written to the job's ``metrics_record``."""
        prefix = f"{category}." if category else ""
        self.progress.metric({f"{prefix}{key}": value for key, value in values.items()})

    def log_metric(self, category: str, key: str, value: Any, **metrics: Any) -> None:
        """Upstream's metric timeline entry (event ``metric``); the values also become latest metrics."""
        self.log("metric", {"category": category, "key": key, "value": value, "metrics": metrics})
        self.set_metrics({key: value, **metrics}, category)

    def log_message(
        self,
        message: str | dict[str, str],
        level: Any = "info",
        *,
        context: Any = None,
        language: str | None = None,
        **fmt: Any,
    ) -> None:
        """A user-facing message: a string, or ``{lang: template}`` formatted with ``fmt``.

        ``context=`` is upstream's older name for ``level``.
        """
        lvl = level_name(context if context is not None else level)
        lang = language or self.env.get_str("SYNAPSE_LANGUAGE", "en") or "en"
        self.log("message", {"content": format_message(message, lang, **fmt), "context": lvl}, level=lvl)

    def log_dev_event(self, message: str, data: dict[str, Any] | None = None) -> None:
        """A debug entry for the plugin's developer (level ``debug``)."""
        self.log("dev_event", {"message": message, "data": data}, level="debug")

    def end_log(self) -> None:
        self.log_message("Plugin run is complete.")

    @property
    def cancelled(self) -> bool:
        return self.cancel_token.cancelled

    def raise_if_cancelled(self) -> None:
        self.cancel_token.raise_if_cancelled()

    @property
    def work_dir(self) -> Path:
        """A per-run scratch directory (downloads, checkpoints) on this machine.

        Under ``synapse-ray-runs`` (not an importable name: a ``synapse_ray``
        folder in the temp dir would shadow the package for code run from there).
        """
        base = self._work_dir or os.path.join(tempfile.gettempdir(), "synapse-ray-runs", self.run_id)
        path = Path(base)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- value semantics -----------------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "job_id": self.job_id,
            "env": self.env,
            "backend": self.backend,
            "progress": self.progress,
            "cancel": self.cancel_token,
            "action_name": self.action_name,
            "work_dir": self._work_dir,
            "checkpoint": self.checkpoint,
            "strict_result": self.strict_result,
            "shard_runner": self.shard_runner,
            "step": self.step,
            "attempt": self.attempt,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        step, attempt = state.pop("step"), state.pop("attempt")
        self.__init__(**state)  # type: ignore[misc]
        self.bind_step(step, attempt)

    def __repr__(self) -> str:
        backend = self.backend.base_url if self.backend is not None else None
        return (
            f"RuntimeContext(run_id={self.run_id!r}, job_id={self.job_id!r}, "
            f"action={self.action_name!r}, step={self.step!r}, attempt={self.attempt}, backend={backend!r})"
        )

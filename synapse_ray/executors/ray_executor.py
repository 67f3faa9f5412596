"""``RayExecutor``: the same action on Ray, as one task or one actor per step.

``mode="auto"`` runs a simple action as a task and a step-based action with an
actor per step; ``"task"`` and ``"actors"`` force one. In actor mode the
driver runs ``run()`` and the one orchestrator, with a placement that ships
each step to its actor. Progress from every worker flows to the shared
aggregator actor; ``RunHandle.progress()`` reads it.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from synapse_ray.errors import (
    ConfigurationError,
    RunCancelledError,
    WorkerCrashedError,
)
from synapse_ray.executors.base import (
    ActionTarget,
    Executor,
    RunHandle,
    settle_error,
    status_for,
)
from synapse_ray.executors.ray_placement import RayActorPlacement, unwrap_remote
from synapse_ray.executors.ray_remote import remote_run_action, remote_step_worker
from synapse_ray.executors.ray_session import ResourceView, ensure_ray, local_paths, ship_code
from synapse_ray.runtime.aggregator import NAMESPACE, aggregator_name, get_aggregator
from synapse_ray.runtime.cancel import CancelToken
from synapse_ray.runtime.context import RuntimeContext, new_run_id
from synapse_ray.runtime.progress import ProgressSnapshot
from synapse_ray.runtime.ray_transport import AggregatorCancelSource, AggregatorRef, RaySink
from synapse_ray.runtime.reporter import ProgressReporter
from synapse_ray.runtime.status import RunStatus

if TYPE_CHECKING:
    from synapse_ray.backend.spec import BackendSpec

MODES = ("auto", "task", "actors")
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL", re.I)


class RayRunHandle(RunHandle):
    """A run on Ray. Work happens in a driver thread that waits on the task or orchestrates actors."""

    def __init__(self, runtime: RuntimeContext, aggregator: Any, sink: RaySink) -> None:
        self.run_id = runtime.run_id
        self.runtime = runtime
        self._aggregator = aggregator
        self._sink = sink
        self._done = threading.Event()
        self._result: Any = None
        self._error: BaseException | None = None
        self._final: RunStatus | None = None
        self._task_ref: Any = None
        self._placement: RayActorPlacement | None = None
        self._thread: threading.Thread | None = None

    # -- the work ----------------------------------------------------------
    def start(self, work: Any) -> None:
        self._thread = threading.Thread(
            target=self._main, args=(work,), daemon=True, name=f"synapse-ray-run-{self.run_id}"
        )
        self._thread.start()

    def _main(self, work: Any) -> None:
        try:
            result = work()
        except BaseException as exc:  # noqa: BLE001 - handed to result()
            self._finish(None, exc)
        else:
            self._finish(result, None)

    def _finish(self, result: Any, error: BaseException | None) -> None:
        """Record the outcome once and tell the aggregator the run's final status."""
        error = settle_error(error, self.runtime.cancel_token.cancelled)
        self._result, self._error = result, error
        status = status_for(error)
        self.runtime.progress.run_status(status.value, str(error) if error else None)
        self._final = status
        self._done.set()

    def _settle(self, timeout: float | None) -> bool:
        """True once the run has ended (waiting up to ``timeout``; None waits for good)."""
        return self._done.wait(timeout)

    def result(self, timeout: float | None = None) -> Any:
        if not self._settle(timeout):
            raise TimeoutError(f"Run {self.run_id} still running after {timeout} s")
        if self._error is not None:
            raise self._error
        return self._result

    # -- reading ---------------------------------------------------------------
    def status(self) -> RunStatus:
        if self._settle(0):
            return self._final or RunStatus.FAILED
        return self.progress().status

    def progress(self) -> ProgressSnapshot:
        import ray

        if self._settle(0):
            self._sink.sync()  # the terminal event is folded in before we read
        return ray.get(self._aggregator.snapshot.remote(self.run_id))

    def wait_for_update(self, version: int, timeout: float = 1.0) -> ProgressSnapshot:
        import ray

        if self._settle(0):
            self._sink.sync()
        return ray.get(self._aggregator.wait_for_update.remote(self.run_id, version, timeout))

    def logs(self) -> list[dict[str, Any]]:
        import ray

        return ray.get(self._aggregator.logs.remote(self.run_id))

    # -- cancel ----------------------------------------------------------------
    def cancel(self, grace_s: float = 10.0) -> None:
        """Ask the run to stop; after ``grace_s`` kill the task or the running step's actor."""
        import ray

        self.runtime.cancel_token.cancel("cancelled by user")
        ray.get(self._aggregator.cancel.remote(self.run_id))
        if self._settle(grace_s):
            return
        if self._task_ref is not None:
            ray.cancel(self._task_ref, force=True)
        elif self._placement is not None:
            self._placement.kill_running()
        self._settle(max(grace_s, 30.0))


class RayTaskRunHandle(RayRunHandle):
    """Task mode needs no driver thread: the outcome is collected when anyone looks.

    ``result()``, ``status()``, ``progress()`` and ``cancel()`` settle the run
    from its ObjectRef; the first to see it finished records the outcome and
    reports the final status.
    """

    def __init__(self, runtime: RuntimeContext, aggregator: Any, sink: RaySink, ref: Any) -> None:
        super().__init__(runtime, aggregator, sink)
        self._task_ref = ref
        self._settle_lock = threading.Lock()

    def _settle(self, timeout: float | None) -> bool:
        import ray

        if self._done.is_set():
            return True
        ready, _ = ray.wait([self._task_ref], timeout=timeout)
        if not ready:
            return False
        with self._settle_lock:
            if not self._done.is_set():
                try:
                    result = _get(self._task_ref, self.runtime.action_name, self.runtime)
                except BaseException as exc:  # noqa: BLE001 - handed to result()
                    self._finish(None, exc)
                else:
                    self._finish(result, None)
        return True


class RayExecutor(Executor):
    """Run actions on a Ray cluster (local when no address is given)."""

    def __init__(
        self,
        address: str | None = None,
        backend: BackendSpec | None = None,
        mode: str = "auto",
        num_cpus: float | None = None,
        num_gpus: float | None = None,
        memory: int | None = None,
        resources: dict[str, float] | None = None,
        runtime_env: dict[str, Any] | None = None,
        max_retries: int = 3,
        reuse_actors: bool = True,
        check_resources: bool = True,
        connect_timeout: float = 15.0,
        env: dict[str, str] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus), ("memory", memory)):
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        env_vars = (runtime_env or {}).get("env_vars") or {}
        token = backend.token.get_secret_value() if backend is not None and backend.token else None
        leaked = [
            k
            for k, v in env_vars.items()
            if _SECRET_NAME.search(k) or (token is not None and token in str(v))
        ]
        if leaked:
            raise ConfigurationError(
                f"runtime_env.env_vars must not carry secrets ({', '.join(leaked)}): runtime_env is "
                "visible in the Ray dashboard and job metadata. Pass backend=BackendSpec(...) instead; "
                "the token then travels as a task argument."
            )
        self.address = address
        self.backend = backend
        self.mode = mode
        self.options: dict[str, Any] = {}
        if num_cpus is not None:
            self.options["num_cpus"] = num_cpus
        if num_gpus is not None:
            self.options["num_gpus"] = num_gpus
        if memory is not None:
            self.options["memory"] = memory
        if resources:
            self.options["resources"] = dict(resources)
        self.runtime_env = runtime_env
        self._task_env: dict[str, Any] | None = None
        self.max_retries = max_retries
        self.reuse_actors = reuse_actors
        self.check_resources = check_resources
        self.connect_timeout = connect_timeout
        self.env = dict(env or {})
        self._resources = ResourceView()
        self._aggregator: Any = None

    def aggregator(self) -> Any:
        if self._aggregator is None:
            self._aggregator = get_aggregator()
        return self._aggregator

    def connect(self) -> None:
        """Connect; the runtime_env becomes the job's if we connect, else each task's and actor's."""
        if ensure_ray(self.address, self.connect_timeout, self.runtime_env) or not self.runtime_env:
            self._task_env = None
            self.options.pop("runtime_env", None)
            return
        paths = local_paths(self.runtime_env)
        if paths:
            raise ConfigurationError(
                f"runtime_env with local paths ({', '.join(paths)}) must be given when this process "
                "first connects to Ray (Ray uploads them only then): create this RayExecutor before "
                "anything else calls ray.init, or call ray.init(runtime_env=...) yourself."
            )
        self._task_env = dict(self.runtime_env)
        self.options["runtime_env"] = self._task_env

    def submit(
        self,
        action: ActionTarget,
        params: Mapping[str, Any] | Any = None,
        job_id: int | str | None = None,
        run_id: str | None = None,
    ) -> RayRunHandle:
        cls, validated, backend = self.prepare(action, params, job_id)
        self.connect()
        ship_code(cls, self._task_env)
        run_id = run_id or new_run_id()
        aggregator = self.aggregator()
        agg_ref = AggregatorRef(aggregator_name(), NAMESPACE, aggregator)
        sink = RaySink(agg_ref, run_id)
        runtime = RuntimeContext(
            run_id=run_id,
            env=self.env,
            backend=backend,
            progress=ProgressReporter(sink),
            cancel=CancelToken(AggregatorCancelSource(agg_ref, run_id)),
            action_name=cls.action_name,
            job_id=None if job_id is None else str(job_id),
        )
        if job_id is not None:  # the aggregator becomes the single writer of the job's progress
            aggregator.attach_job.remote(run_id, backend, job_id)
        driver_action = cls(validated, runtime)
        registry = driver_action.build_registry()
        mode = self.mode if self.mode != "auto" else ("actors" if registry else "task")
        if mode == "task":
            if self.check_resources:
                self._resources.check(f"Action '{cls.action_name}'", self.options)
            return self._submit_task(cls, validated, runtime, aggregator, sink)
        handle = RayRunHandle(runtime, aggregator, sink)
        if registry:
            placement = RayActorPlacement(
                self.options,
                reuse=self.reuse_actors,
                resources=self._resources if self.check_resources else _NoCheck(),
                crash_retries=self.max_retries,
            )
            placement.validate(registry.get_steps(), driver_action.create_context())
            runtime.step_placement = placement
            handle._placement = placement
            handle.start(lambda: self._run_actors(handle, driver_action, placement))
        else:
            if self.check_resources:
                self._resources.check(f"Action '{cls.action_name}'", self.options)
            handle.start(lambda: self._run_single_actor(handle, cls, validated, runtime))
        return handle

    # -- the three ways to run ------------------------------------------------
    def _submit_task(
        self, cls: type, params: Any, runtime: RuntimeContext, aggregator: Any, sink: RaySink
    ) -> RayTaskRunHandle:
        # No RUNNING push here: the task's first step event marks the run running.
        task = remote_run_action().options(
            max_retries=self.max_retries, retry_exceptions=False, **self.options
        )
        return RayTaskRunHandle(runtime, aggregator, sink, task.remote(cls, params, runtime))

    def _run_actors(self, handle: RayRunHandle, action: Any, placement: RayActorPlacement) -> Any:
        runtime = action.runtime_ctx
        runtime.progress.run_status(RunStatus.RUNNING.value)
        try:
            return action.run()
        finally:
            placement.close()

    def _run_single_actor(self, handle: RayRunHandle, cls: type, params: Any, runtime: RuntimeContext) -> Any:

        runtime.progress.run_status(RunStatus.RUNNING.value)
        attempts = self.max_retries + 1
        for attempt in range(1, attempts + 1):
            actor = remote_step_worker().options(max_restarts=0, **self.options).remote()
            placement = RayActorPlacement()
            placement._actors.append(actor)
            placement._running = actor
            handle._placement = placement
            try:
                return _get(actor.run_action.remote(cls, params, runtime), cls.action_name, runtime)
            except WorkerCrashedError:
                if attempt == attempts or runtime.cancelled:
                    raise
            finally:
                placement.close()
        raise AssertionError("unreachable")


class _NoCheck(ResourceView):
    def check(self, what: str, options: dict[str, Any]) -> None:
        return None


def _get(ref: Any, action_name: str, runtime: RuntimeContext) -> Any:
    """``ray.get`` with Ray's failures turned into ours."""
    import ray
    from ray.exceptions import (
        RayActorError,
        RayTaskError,
        TaskCancelledError,
    )
    from ray.exceptions import (
        WorkerCrashedError as RayWorkerCrashed,
    )

    try:
        outcome = ray.get(ref)
        outcome.forward_progress(runtime.progress)  # ahead of the final status we are about to send
        return outcome.value
    except TaskCancelledError as exc:
        raise RunCancelledError(f"Action '{action_name}' was cancelled", action=action_name) from exc
    except RayTaskError as exc:
        raise unwrap_remote(exc)  # noqa: B904 - keeps the remote cause chain
    except (RayActorError, RayWorkerCrashed) as exc:
        if runtime.cancel_token.cancelled:
            raise RunCancelledError(f"Action '{action_name}' was cancelled", action=action_name) from None
        raise WorkerCrashedError(
            f"Action '{action_name}': the worker process died ({str(exc).strip().splitlines()[0]})",
            action=action_name,
        ) from None

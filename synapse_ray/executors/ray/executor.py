"""``RayExecutor``: the same action on Ray, as one task or one actor per step.

``mode="auto"`` runs a simple action as a task and a step-based action with an
actor per step; ``"task"`` and ``"actors"`` force one. In actor mode the
driver runs ``run()`` and the one orchestrator, with a placement that ships
each step to its actor. In task mode the whole action (orchestrator included)
runs in one task, and the driver owns the run-level crash budget. Progress
from every worker flows to the driver's aggregator actor.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from synapse_ray.errors import ConfigurationError, WorkerCrashedError
from synapse_ray.executors.base import Executor
from synapse_ray.executors.handle import RunHandle
from synapse_ray.executors.ray.aggregator import NAMESPACE, get_aggregator
from synapse_ray.executors.ray.connect import ensure_ray, local_paths
from synapse_ray.executors.ray.errors import map_ray_errors
from synapse_ray.executors.ray.placement import RayActorPlacement
from synapse_ray.executors.ray.remote import Outcome, absorb_failed, remote_run_action, use_ray_pickler
from synapse_ray.executors.ray.resources import ResourceView
from synapse_ray.executors.ray.shards import RayShardRunner
from synapse_ray.executors.ray.shipping import ship_code
from synapse_ray.executors.ray.source import AggregatorSource
from synapse_ray.executors.ray.transport import CALL_TIMEOUT, AggregatorCancelSource, AggregatorRef, RaySink
from synapse_ray.executors.ray.values import DEFAULT_STORE_THRESHOLD
from synapse_ray.runtime.cancel import CancelToken
from synapse_ray.runtime.context import RuntimeContext
from synapse_ray.runtime.reporter import ProgressReporter
from synapse_ray.runtime.status import RunStatus
from synapse_ray.steps.retry import CrashBudget

if TYPE_CHECKING:
    from synapse_ray.backend.spec import BackendSpec

MODES = ("auto", "task", "actors")
_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|CREDENTIAL", re.I)


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
        strict_result: bool = False,
        store_threshold: int = DEFAULT_STORE_THRESHOLD,
    ) -> None:
        if mode not in MODES:
            raise ConfigurationError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        for name, value in (("num_cpus", num_cpus), ("num_gpus", num_gpus), ("memory", memory)):
            if value is not None and (not isinstance(value, int | float) or value < 0):
                raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(max_retries, int) or max_retries < 0:
            raise ConfigurationError(f"max_retries must be an integer >= 0, got {max_retries!r}")
        if not isinstance(connect_timeout, int | float) or connect_timeout <= 0:
            raise ConfigurationError(
                f"connect_timeout must be a number of seconds > 0, got {connect_timeout!r}"
            )
        if isinstance(store_threshold, bool) or not isinstance(store_threshold, int) or store_threshold < 0:
            raise ConfigurationError(
                f"store_threshold must be a number of bytes (int >= 0), got {store_threshold!r}"
            )
        _refuse_secrets_in_runtime_env(runtime_env, backend)
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
        self._task_fn: tuple[str, Any] | None = None
        self.max_retries = max_retries
        self.reuse_actors = reuse_actors
        self.check_resources = check_resources
        self.connect_timeout = connect_timeout
        self.env = dict(env or {})
        self.strict_result = strict_result
        self.store_threshold = store_threshold
        self._resources = ResourceView() if check_resources else _NoCheck()

    def connect(self) -> None:
        """Connect; the runtime_env becomes the job's if we connect, else each task's and actor's."""
        use_ray_pickler()
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

    def _task_function(self) -> Any:
        """The action's remote function with this executor's options, made once per set of
        options: Ray's ``.options()`` builds a wrapper class on every call (0.04 ms a run on a
        warm CPU, 0.8 ms right after an idle second here)."""
        key = repr(self.options)  # connect() may have changed the options since
        if self._task_fn is None or self._task_fn[0] != key:
            task = remote_run_action().options(max_retries=0, retry_exceptions=False, **self.options)
            self._task_fn = (key, task)
        return self._task_fn[1]

    def _start(self, cls: type, params: Any, backend: Any, job_id: str | None, run_id: str) -> RunHandle:
        self.connect()
        ship_code(cls, self._task_env)
        name, aggregator = get_aggregator()
        agg_ref = AggregatorRef(name, NAMESPACE, aggregator)
        sink = RaySink(agg_ref, run_id, mirror=True)
        runtime = RuntimeContext(
            run_id=run_id,
            job_id=job_id,
            env=self.env,
            backend=backend,
            progress=ProgressReporter(sink),
            # the driver's own flag is the truth here; workers ask the aggregator
            cancel=CancelToken(AggregatorCancelSource(agg_ref, run_id), local=True),
            action_name=cls.action_name,
            strict_result=self.strict_result,
            shard_runner=RayShardRunner(crash_retries=self.max_retries),
        )
        source = AggregatorSource(
            agg_ref, run_id, sink, backend, job_id, cancelled=lambda: runtime.cancel_token.cancelled
        )
        mode = self.mode if self.mode != "auto" else ("actors" if cls.is_step_based() else "task")
        if mode == "task":
            self._resources.check(f"Action '{cls.action_name}'", self.options)
            task = TaskRun(cls, params, runtime, self._task_function(), self.max_retries)
            if job_id is not None:
                _attach_job(aggregator, run_id, backend, job_id)
            task.launch()  # in flight while the run thread starts
            return RunHandle(runtime, source, kill=task.kill).start(task, then=task.forward_tail)
        placement = RayActorPlacement(
            self.options,
            reuse=self.reuse_actors,
            resources=self._resources,
            crash_retries=self.max_retries,
            store_threshold=self.store_threshold,
        )
        runtime.step_placement = placement
        runtime.progress.flush_step_events = False  # an aggregator call between steps costs ~0.3 ms
        action: Any = None
        failure: Exception | None = None
        try:
            action = cls(params, runtime)
            steps, ctx, _ = action.prepare_run()
        except Exception as exc:  # noqa: BLE001 - the user's code failed: the run fails, as it
            # would in a task or in-process (result() raises it, typed; the job record says so)
            failure = exc
        else:
            placement.validate(steps, ctx)  # bad input fails here, before any actor starts
        if job_id is not None:
            _attach_job(aggregator, run_id, backend, job_id)

        def work() -> Any:
            if failure is not None:
                raise failure
            runtime.progress.run_status(RunStatus.RUNNING.value)
            return action.run()

        return RunHandle(runtime, source, kill=placement.kill_running).start(work)


class TaskRun:
    """The whole action as one Ray task; a dead worker costs one run-level retry.

    The task itself is never retried by Ray (``max_retries=0``): Ray would
    restart the in-task orchestrator silently at attempt 1. The driver keeps
    the crash budget and numbers the whole run's attempts (``run_attempt``),
    which progress and the action see.
    """

    def __init__(self, cls: type, params: Any, runtime: RuntimeContext, task: Any, max_retries: int) -> None:
        self.cls = cls
        self.params = params
        self.runtime = runtime
        self.max_retries = max_retries
        self._task = task  # ``run_action`` as a remote function, with the executor's options
        self._ref: Any = None
        self._tail: Outcome | None = None

    def launch(self) -> None:
        """Submit the first attempt from the caller's thread, so a short run's task is
        already running while the run thread that waits for it (``__call__``) starts."""
        self._ref = self._task.remote((self.cls, self.params, self.runtime))

    def __call__(self) -> Any:
        try:
            outcome = self._outcome()
        except Exception as exc:
            absorb_failed(self.runtime.progress, exc)  # what the failed task reported
            raise
        finally:
            self._ref = None
        self._tail = outcome
        return outcome.value

    def forward_tail(self) -> None:
        """The progress that rode back with the result, ahead of the final status the handle
        sends next (in its batch). Left until the caller has the result: after a long task
        this is about 0.5 ms of pages gone cold, and every read of an ended run waits for it."""
        outcome, self._tail = self._tail, None
        if outcome is not None:
            outcome.forward_progress(self.runtime.progress, wake=False)

    def _outcome(self) -> Any:
        import ray

        crashes = CrashBudget(self.max_retries)
        rt = self.runtime
        while True:
            try:
                with map_ray_errors(f"Action '{rt.action_name}'", attempt=rt.run_attempt):
                    return ray.get(self._ref)
            except WorkerCrashedError as exc:
                if rt.cancelled or not crashes.spend():
                    raise
                rt.logger.warning("run_retry_after_crash", run_attempt=rt.run_attempt, error=str(exc))
                rt.run_attempt += 1
                self._ref = self._task.remote((self.cls, self.params, rt))

    def kill(self) -> None:
        """The cancel fallback: stop the task (its worker is killed)."""
        import ray

        ref = self._ref
        if ref is not None:
            ray.cancel(ref, force=True)


def _attach_job(aggregator: Any, run_id: str, backend: Any, job_id: str) -> None:
    """Make the aggregator the single writer of the job's record, before the run starts.

    Waited for: workers push to the aggregator on their own, and Ray orders calls
    per caller only, so a worker's first batch (its log entries) could otherwise
    arrive before the writer that should send them.
    """
    import ray

    with map_ray_errors(f"Attaching job {job_id} to the progress aggregator"):
        ray.get(aggregator.attach_job.remote(run_id, backend, job_id), timeout=CALL_TIMEOUT)


class _NoCheck(ResourceView):
    def check(self, what: str, options: dict[str, Any]) -> None:
        return None


def _refuse_secrets_in_runtime_env(runtime_env: dict[str, Any] | None, backend: Any) -> None:
    env_vars = (runtime_env or {}).get("env_vars") or {}
    token = backend.token.get_secret_value() if backend is not None and backend.token else None
    leaked = [
        k for k, v in env_vars.items() if _SECRET_NAME.search(k) or (token is not None and token in str(v))
    ]
    if leaked:
        raise ConfigurationError(
            f"runtime_env.env_vars must not carry secrets ({', '.join(leaked)}): runtime_env is "
            "visible in the Ray dashboard and job metadata. Pass backend=BackendSpec(...) instead; "
            "the token then travels as a task argument."
        )


# The one handle class, under the name this module exported before.
RayRunHandle = RunHandle

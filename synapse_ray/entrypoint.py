"""What a Ray Job runs inside the cluster: ``python -m synapse_ray.entrypoint``.

``run`` loads the action, validates its params and runs it with
``RayExecutor`` in the chosen mode (steps still get their own actors, and
progress flows to the run's aggregator): the one run path, through
``RunHandle``. It exits non-zero when the run does not succeed.

Submitted by ``RayJobExecutor``, it gets ``--package synapse_job_<id>``: the
per-submission private package (params, backend spec with token, channel
key, run id), which it reads and deletes before any user code is imported,
and it reports through signed records in its own log (``jobs_channel``).
Started directly (a KubeRay ``RayJob``), it takes ``--target`` and
``--params`` and the backend from the environment (a Kubernetes Secret), and
prints the result as JSON at the end.

``stop SUBMISSION_ID --grace S`` is the control job ``synapse-ray stop``
submits: it leaves a stop request in the cluster's KV store, which the
running entrypoint polls and turns into ``handle.cancel(grace_s=S)``. A
SIGTERM (Ray's own ``stop_job``) also cancels cooperatively, within the few
seconds Ray waits before its SIGKILL.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import sys
import threading
import time
from typing import Any

STOP_NAMESPACE = "synapse_ray"
PROGRESS_INTERVAL = 1.0  # at most one progress record a second: the log is the channel
SIGTERM_GRACE = 2.0  # Ray kills the entrypoint 3 s after its SIGTERM (RAY_JOB_STOP_WAIT_TIME_S)


def stop_key(submission_id: str) -> bytes:
    return f"stop:{submission_id}".encode()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m synapse_ray.entrypoint")
    sub = parser.add_subparsers(dest="command", required=True)
    run_p = sub.add_parser("run", help="run an action (the Ray Job's driver)")
    run_p.add_argument("--target", required=True)
    run_p.add_argument("--package", default=None, help="private submission package (from submit)")
    run_p.add_argument("--params", default=None, help="JSON object or @file.json (direct use)")
    run_p.add_argument("--mode", default="auto", choices=["auto", "task", "actors"])
    run_p.add_argument("--job-id", default=None)
    stop_p = sub.add_parser("stop", help="ask a running submission to stop cooperatively")
    stop_p.add_argument("submission_id")
    stop_p.add_argument("--grace", type=float, default=10.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "stop":
        return request_stop(args.submission_id, args.grace)
    return run(args)


def run(args: argparse.Namespace) -> int:
    from synapse_ray.executors.ray.jobs_channel import FINAL, STARTED, RecordWriter

    private: dict[str, Any] = {}
    if args.package:  # first, before any user code can look at it
        from synapse_ray.executors.ray.jobs_packaging import read_private_package

        private = read_private_package(args.package)
    submission_id = private.get("submission_id", "")
    writer = RecordWriter(private["key"], submission_id) if private.get("key") else None

    from synapse_ray.backend.spec import BackendSpec
    from synapse_ray.executors.ray.executor import RayExecutor
    from synapse_ray.runtime.logging import register_secret

    backend = BackendSpec.model_validate(private["backend"]) if private.get("backend") else None
    if backend is not None and backend.token is not None:
        register_secret(backend.token.get_secret_value())
    params = private["params"] if args.package else _parse_params(args.params)
    job_id = private.get("job_id") if args.package else args.job_id
    executor = RayExecutor(backend=backend, mode=args.mode)
    try:
        handle = executor.submit(args.target, params, job_id=job_id, run_id=private.get("run_id"))
    except Exception as exc:  # noqa: BLE001 - bad input: one final record, non-zero exit
        _finish(writer, FINAL, None, exc, None)
        return 2
    if writer is not None:
        writer.emit(STARTED, {"run_id": handle.run_id, "action": handle.runtime.action_name})
    _watch_for_stop(handle, submission_id)
    _follow(handle, writer)
    result, error = None, None
    try:
        result = handle.result()
    except BaseException as exc:  # noqa: BLE001 - reported in the final record
        error = exc
    _finish(writer, FINAL, result, error, handle.progress())
    executor.close()
    return 0 if error is None else 1


def _follow(handle: Any, writer: Any) -> Any:
    """Emit a progress record when progress moved, at most every ``PROGRESS_INTERVAL``."""
    from synapse_ray.executors.ray.jobs_channel import PROGRESS

    snap = handle.progress()
    sent_version, sent_at = -1, 0.0
    while not handle.done():
        now = time.monotonic()
        if writer is not None and snap.version != sent_version and now - sent_at >= PROGRESS_INTERVAL:
            writer.emit(PROGRESS, snap.model_dump(mode="json"))
            sent_version, sent_at = snap.version, now
        snap = handle.wait_for_update(snap.version, timeout=PROGRESS_INTERVAL)
    return snap


def _finish(writer: Any, kind: str, result: Any, error: BaseException | None, snap: Any) -> None:
    from synapse_ray.runtime.jsonable import to_json
    from synapse_ray.steps.orchestrator import status_for

    status = status_for(error).value
    if writer is None:  # direct use: the result on stdout, the error on stderr
        if error is None:
            print(to_json(result), flush=True)
        else:
            from synapse_ray.cli.output import error_paragraph

            print(f"Error: {error_paragraph(error)}", file=sys.stderr, flush=True)
        return
    body: dict[str, Any] = {
        "status": status,
        "result": json.loads(to_json(result)) if error is None else None,
        "result_pickle": _pickled(result) if error is None else None,
        "error": _error_data(error) if error is not None else None,
        "error_pickle": _pickled(error) if error is not None else None,
        "progress": snap.model_dump(mode="json") if snap is not None else None,
    }
    writer.emit(kind, body)


def _pickled(value: Any) -> str | None:
    from ray import cloudpickle

    try:
        return base64.b64encode(cloudpickle.dumps(value)).decode()
    except Exception:  # noqa: BLE001 - the JSON form still travels
        return None


def _error_data(error: BaseException) -> dict[str, Any]:
    import traceback

    fields = getattr(error, "fields", {}) or {}
    return {
        "type": type(error).__name__,
        "message": str(error),
        "fields": {k: v for k, v in fields.items() if isinstance(v, str | int | float | bool | None)},
        "traceback": "".join(traceback.format_exception(error)),
    }


def _watch_for_stop(handle: Any, submission_id: str) -> None:
    """Turn a stop request (KV, from ``stop``) or SIGTERM (Ray's stop) into a cooperative cancel."""
    from ray.experimental.internal_kv import _internal_kv_del, _internal_kv_get

    started = threading.Event()

    def cancel(grace: float) -> None:
        if not started.is_set():
            started.set()
            threading.Thread(target=handle.cancel, args=(grace,), daemon=True).start()

    def on_signal(signum: int, frame: Any) -> None:
        handle.runtime.logger.warning("stop_signal", signal=signum)
        cancel(SIGTERM_GRACE)

    signal.signal(signal.SIGTERM, on_signal)
    if not submission_id:
        return

    def poll() -> None:
        key = stop_key(submission_id)
        while not handle.done():
            try:
                value = _internal_kv_get(key, namespace=STOP_NAMESPACE)
            except Exception:  # noqa: BLE001 - GCS hiccup: try again
                value = None
            if value is not None:
                grace = float(json.loads(value).get("grace", 10.0))
                handle.runtime.logger.warning("stop_requested", grace_s=grace)
                cancel(grace)
                _internal_kv_del(key, namespace=STOP_NAMESPACE)
                return
            time.sleep(0.5)

    threading.Thread(target=poll, daemon=True, name="synapse-ray-stop-watch").start()


def request_stop(submission_id: str, grace: float) -> int:
    """The stop control job: leave the request where the running entrypoint looks."""
    import ray
    from ray.experimental.internal_kv import _internal_kv_put

    ray.init(include_dashboard=False, log_to_driver=False)
    _internal_kv_put(
        stop_key(submission_id), json.dumps({"grace": grace}), overwrite=True, namespace=STOP_NAMESPACE
    )
    print(f"stop requested for {submission_id} (grace {grace:g} s)", flush=True)
    return 0


def _parse_params(raw: str | None) -> dict[str, Any]:
    if not raw:
        return {}
    if raw.startswith("@"):
        with open(raw[1:]) as fh:
            raw = fh.read()
    value = json.loads(raw)
    if not isinstance(value, dict):
        raise SystemExit("--params must be a JSON object")
    return value


if __name__ == "__main__":
    sys.exit(main())

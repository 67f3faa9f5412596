"""``synapse-ray submit | status | logs | stop | list``: Ray Jobs, with verbs and flags like ``ray job``.

``submit`` waits by default, showing the same live progress as ``run`` plus
the job's log lines (on stderr), then prints the result as JSON on stdout.
Ctrl-C asks whether to stop the job (or detaches, with
``--detach-on-interrupt``).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, TextIO

import click

from synapse_ray.cli.display import describe, follow
from synapse_ray.cli.output import error_paragraph, to_json
from synapse_ray.cli.run import parse_params
from synapse_ray.errors import ConfigurationError, SynapseRayError

_ADDRESS_HELP = "Jobs API address (http://HEAD:8265); default RAY_API_SERVER_ADDRESS or an http RAY_ADDRESS."


def _fail(exc: BaseException, code: int = 2) -> None:
    click.echo(f"Error: {exc}", err=True)
    sys.exit(code)


def _executor(address: str | None, **kwargs: Any) -> Any:
    from synapse_ray.executors.ray.jobs import RayJobExecutor

    return RayJobExecutor(address=address, **kwargs)


def _attach(address: str | None, submission_id: str, follow_job: bool) -> Any:
    try:
        return _executor(address).attach(submission_id, follow=follow_job)
    except (SynapseRayError, ValueError) as exc:
        _fail(exc)


class _WithLogs:
    """A handle whose progress reads also print the job's new log lines (for ``follow``)."""

    def __init__(self, handle: Any, stream: TextIO) -> None:
        self.handle = handle
        self.run_id = handle.submission_id
        self.stream = stream
        self.shown = 0

    def _print_new(self) -> None:
        lines = self.handle.log_lines()
        for line in lines[self.shown :]:
            print(line, file=self.stream, flush=True)
        self.shown = len(lines)

    def progress(self) -> Any:
        self._print_new()
        return self.handle.progress()

    def wait_for_update(self, version: int, timeout: float = 0.5) -> Any:
        snap = self.handle.wait_for_update(version, timeout)
        self._print_new()
        return snap

    def status(self) -> Any:
        return self.handle.status()

    def wait(self, timeout: float | None = None) -> Any:
        return self.handle.wait(timeout)


@click.command()
@click.argument("target")
@click.option("--params", "params_raw", default=None, help="Params as a JSON object, or @file.json.")
@click.option("--address", default=None, help=_ADDRESS_HELP)
@click.option(
    "--working-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Uploaded with the job; TARGET is relative to it.",
)
@click.option(
    "--requirements",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="pip requirements (default: requirements.txt in the working dir, if any).",
)
@click.option(
    "--exclude", "excludes", multiple=True, help="Also leave these out of the upload (gitignore style)."
)
@click.option(
    "--py-module", "py_modules", multiple=True, help="Extra local package to ship (runtime_env py_modules)."
)
@click.option(
    "--mode",
    type=click.Choice(["auto", "task", "actors"]),
    default="auto",
    show_default=True,
    help="How the job runs the action: auto = simple actions as a task, steps one actor each.",
)
@click.option("--entrypoint-num-cpus", type=click.FloatRange(min=0), default=None)
@click.option("--entrypoint-num-gpus", type=click.FloatRange(min=0), default=None)
@click.option("--job-id", default=None, help="Also write progress and status to this backend job.")
@click.option("--no-wait", is_flag=True, help="Print the submission id and return.")
@click.option("--detach-on-interrupt", is_flag=True, help="Ctrl-C detaches instead of offering to stop.")
@click.option("--quiet", "-q", is_flag=True, help="No live progress or logs; print only the result.")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the result JSON to this file.",
)
def submit(
    target: str,
    params_raw: str | None,
    address: str | None,
    working_dir: Path,
    requirements: Path | None,
    excludes: tuple[str, ...],
    py_modules: tuple[str, ...],
    mode: str,
    entrypoint_num_cpus: float | None,
    entrypoint_num_gpus: float | None,
    job_id: str | None,
    no_wait: bool,
    detach_on_interrupt: bool,
    quiet: bool,
    output: Path | None,
) -> None:
    """Submit TARGET (path/in/working_dir.py:Class or module:Class) as a Ray Job.

    The backend comes from SYNAPSE_HOST / SYNAPSE_ACCESS_TOKEN here (its token
    travels inside the private upload, never in the job's runtime_env,
    metadata or entrypoint), or else from the cluster's own environment.
    """
    params = parse_params(params_raw)
    try:
        executor = _executor(
            address,
            working_dir=working_dir,
            requirements=requirements,
            mode=mode,
            excludes=list(excludes),
            py_modules=list(py_modules),
            entrypoint_num_cpus=entrypoint_num_cpus,
            entrypoint_num_gpus=entrypoint_num_gpus,
        )
        handle = executor.submit(target, params, job_id=job_id)
    except (SynapseRayError, ValueError) as exc:
        _fail(exc)
    if no_wait:
        click.echo(handle.submission_id)
        return
    click.echo(f"Submitted {handle.submission_id} (run {handle.run_id})", err=True)
    try:
        follow(_WithLogs(handle, sys.stderr), quiet=quiet)
        result = handle.result()
    except KeyboardInterrupt:
        _interrupted(handle, detach_on_interrupt)
    except Exception as exc:  # noqa: BLE001 - one paragraph, non-zero exit
        click.echo(f"Error: {error_paragraph(exc)} [job {handle.submission_id}]", err=True)
        sys.exit(1)
    text = to_json(result)
    if output is not None:
        output.write_text(text + "\n")
    click.echo(text)


def _interrupted(handle: Any, detach: bool) -> None:
    sid = handle.submission_id
    stop = not detach
    if stop and sys.stdin.isatty():
        stop = click.confirm(f"\nStop job {sid}?", default=True, err=True)
    if not stop:
        click.echo(f"Detached; the job goes on. Follow it: synapse-ray logs --follow {sid}", err=True)
        sys.exit(130)
    click.echo(f"Stopping job {sid} ...", err=True)
    handle.cancel(grace_s=10.0)
    click.echo(f"Job {sid}: {handle.status().value}", err=True)
    sys.exit(130)


@click.command()
@click.argument("submission_id")
@click.option("--address", default=None, help=_ADDRESS_HELP)
def status(submission_id: str, address: str | None) -> None:
    """Show the status, progress and error (if any) of a submitted job."""
    handle = _attach(address, submission_id, follow_job=False)
    snap = handle.progress()
    click.echo(f"Status for job '{submission_id}': {snap.status.value}")
    click.echo(f"Progress: {describe(snap)}")
    for name, step in snap.steps.items():
        click.echo(f"  {name:<20} {step.percent:5.1f}% {step.status.value}")
    if snap.error:
        click.echo(f"Error: {snap.error}")
    for warning in snap.warnings:
        click.echo(f"Warning: {warning}")


@click.command()
@click.argument("submission_id")
@click.option("--address", default=None, help=_ADDRESS_HELP)
@click.option("--follow", "-f", "follow_job", is_flag=True, help="Keep printing until the job ends.")
def logs(submission_id: str, address: str | None, follow_job: bool) -> None:
    """Print a job's log (our records taken out); with --follow, until it ends, drained to the last line."""
    handle = _attach(address, submission_id, follow_job=follow_job)
    shown = 0
    while True:
        ended = not follow_job or handle.source.wait_ended(0)
        lines = handle.log_lines()
        for line in lines[shown:]:
            click.echo(line)
        shown = len(lines)
        if ended:
            return
        handle.wait_for_update(handle.source.snapshot().version, timeout=1.0)


@click.command()
@click.argument("submission_id")
@click.option("--address", default=None, help=_ADDRESS_HELP)
@click.option("--grace", type=click.FloatRange(min=0), default=10.0, show_default=True)
def stop(submission_id: str, address: str | None, grace: float) -> None:
    """Cancel a job cooperatively: steps see ctx.cancelled, completed steps roll back;
    after --grace seconds the current step is killed, and then Ray stops the job."""
    handle = _attach(address, submission_id, follow_job=True)
    handle.source.wait_for_update(-1, timeout=5.0)  # the first read of the job
    if handle.source.job_status in ("SUCCEEDED", "FAILED", "STOPPED"):
        click.echo(f"Job '{submission_id}' already ended: {handle.status().value}")
        return
    click.echo(f"Stopping job '{submission_id}' (grace {grace:g} s) ...", err=True)
    started = time.monotonic()
    handle.cancel(grace_s=grace)
    handle.wait(30)
    click.echo(f"Job '{submission_id}': {handle.status().value} after {time.monotonic() - started:.1f} s")


@click.command(name="list")
@click.option("--address", default=None, help=_ADDRESS_HELP)
@click.option("--action", default=None, help="Only jobs of this action name.")
@click.option("--run-id", default=None, help="Only the job of this run id.")
@click.option("--params-hash", default=None, help="Only jobs submitted with these params.")
def list_jobs(address: str | None, action: str | None, run_id: str | None, params_hash: str | None) -> None:
    """List synapse-ray jobs (not other Ray jobs) with status and progress."""
    from synapse_ray.executors.ray.jobs import list_our_jobs

    executor = _executor(address)
    try:
        _, client = executor.client()
        jobs = list_our_jobs(client, action=action, run_id=run_id, params_hash=params_hash)
    except (SynapseRayError, ValueError) as exc:
        _fail(exc)
    click.echo(
        f"{'SUBMISSION ID':<24} {'ACTION':<24} {'STATUS':<10} {'PROGRESS':>8}  {'RUN ID':<12}  PARAMS HASH"
    )
    for job in jobs:
        progress = "-"
        try:
            snap = executor.attach(job.submission_id, follow=False).progress()
            progress = f"{snap.overall:.1f}%"
            job_status = snap.status.value
        except (ConfigurationError, SynapseRayError):
            job_status = str(getattr(job.status, "value", job.status))
        meta = job.metadata or {}
        click.echo(
            f"{job.submission_id:<24} {meta.get('action', ''):<24} {job_status:<10} {progress:>8}  "
            f"{meta.get('run_id', ''):<12}  {meta.get('params_hash', '')}"
        )

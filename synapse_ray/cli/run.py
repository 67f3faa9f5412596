"""``synapse-ray run``: validate, run with live progress, print the result as JSON."""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import click

from synapse_ray.backend import BackendSpec
from synapse_ray.cli.display import follow
from synapse_ray.cli.output import error_paragraph, to_json
from synapse_ray.errors import ConfigurationError, ParamsValidationError, SynapseRayError, TargetError
from synapse_ray.executors.base import Executor, resolve
from synapse_ray.executors.local import LocalExecutor
from synapse_ray.localbackend import start_embedded


def _executor(
    kind: str, mode: str, address: str | None, num_cpus: float | None, num_gpus: float | None
) -> Executor:
    if kind == "local":
        return LocalExecutor()
    from synapse_ray.executors.ray.executor import RayExecutor

    return RayExecutor(address=address, mode=mode, num_cpus=num_cpus, num_gpus=num_gpus)


def parse_params(raw: str | None) -> dict[str, Any]:
    """``--params`` takes inline JSON or ``@file.json``; it must be a JSON object."""
    if raw is None or raw == "":
        return {}
    source = "--params"
    if raw.startswith("@"):
        path = Path(raw[1:]).expanduser()
        if not path.is_file():
            raise click.BadParameter(f"params file not found: {path}", param_hint="--params")
        source, raw = str(path), path.read_text()
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"{source} is not valid JSON: {exc}", param_hint="--params") from None
    if not isinstance(value, dict):
        raise click.BadParameter(
            f"{source} must be a JSON object, got {type(value).__name__}", param_hint="--params"
        )
    return value


@click.command()
@click.argument("target")
@click.option("--params", "params_raw", default=None, help="Params as a JSON object, or @file.json.")
@click.option(
    "--executor",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="local: in this process; ray: on a Ray cluster (local Ray unless --address / RAY_ADDRESS).",
)
@click.option(
    "--mode",
    type=click.Choice(["auto", "task", "actors"]),
    default="auto",
    show_default=True,
    help="Ray only. auto: simple actions as a task, step-based actions one actor per step.",
)
@click.option("--address", default=None, help="Ray only. Cluster address (host:port); default RAY_ADDRESS.")
@click.option("--num-cpus", type=click.FloatRange(min=0), default=None, help="Ray only. CPUs per task/actor.")
@click.option("--num-gpus", type=click.FloatRange(min=0), default=None, help="Ray only. GPUs per task/actor.")
@click.option("--job-id", default=None, help="Also write progress and status to this backend job.")
@click.option("--quiet", "-q", is_flag=True, help="No live progress; print only the result.")
@click.option(
    "--verbose",
    "-v",
    is_flag=True,
    help="Ray only. Show Ray's own start-up lines and warnings (default: they go to a log file).",
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Also write the result JSON to this file (Ray forwards workers' own prints to stdout).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Data dir of the embedded backend (used when SYNAPSE_HOST is not set).",
)
def run(
    target: str,
    params_raw: str | None,
    executor: str,
    mode: str,
    address: str | None,
    num_cpus: float | None,
    num_gpus: float | None,
    job_id: str | None,
    quiet: bool,
    verbose: bool,
    output: Path | None,
    data_dir: Path | None,
) -> None:
    """Run TARGET (module:Class or path/to/file.py:Class) and print its result as JSON.

    The backend comes from SYNAPSE_HOST / SYNAPSE_ACCESS_TOKEN; without them an
    embedded local backend is started on 127.0.0.1 for the duration of the run.
    """
    params = parse_params(params_raw)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # `module:Class` targets resolve from here, like `python -m`
    ray_only = {
        "--mode": mode != "auto",
        "--address": address,
        "--num-cpus": num_cpus,
        "--num-gpus": num_gpus,
    }
    if executor != "ray" and any(v not in (None, False) for v in ray_only.values()):
        used = ", ".join(k for k, v in ray_only.items() if v not in (None, False))
        raise click.UsageError(f"{used} only apply with --executor ray")
    try:
        resolve(target, params)  # bad input fails here, before anything runs
        spec = BackendSpec.from_env()
        runner = _executor(executor, mode, address, num_cpus, num_gpus)
    except (TargetError, ParamsValidationError, ConfigurationError, ValueError) as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(2)
    if executor == "ray" and not verbose:
        log_file = ray_log_file()
        route_ray_logs(log_file)
        click.echo(f"Ray's own log lines go to {log_file} (--verbose shows them)", err=True)
    # stdout carries the result JSON only. Ray forwards workers' prints to this
    # process's stdout, at any time until the process exits: from here on they
    # (and anything else printed) go to stderr; the result goes to the real stdout.
    result_out = sys.stdout
    sys.stdout = sys.stderr
    with ExitStack() as stack:
        stack.enter_context(runner)  # on the way out: wait (bounded) for pending final job records
        if spec is None:
            server = stack.enter_context(start_embedded(data_dir))
            spec = server.spec
            click.echo(
                f"Using the embedded local backend at {server.url} (data in {server.data_dir})", err=True
            )
        runner.backend = spec
        try:
            handle = runner.submit(target, params, job_id=job_id)
        except (ConfigurationError, SynapseRayError) as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(2)
        try:
            follow(handle, quiet=quiet)
            result = handle.result()
        except KeyboardInterrupt:
            click.echo(f"Cancelling run {handle.run_id} ...", err=True)
            handle.cancel(grace_s=10.0)
            sys.exit(130)
        except Exception as exc:  # noqa: BLE001 - one paragraph, non-zero exit
            click.echo(f"Error: {error_paragraph(exc, handle.run_id)}", err=True)
            sys.exit(1)
    text = to_json(result)
    if output is not None:
        output.write_text(text + "\n")
    click.echo(text, file=result_out)


def ray_log_file() -> Path:
    """Where Ray's own log lines go for this CLI run (next to the embedded backend's data)."""
    from synapse_ray.localbackend.datadir import default_data_dir

    return default_data_dir() / "logs" / f"ray-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def route_ray_logs(path: Path) -> None:
    from synapse_ray.executors.ray.connect import route_ray_logs as route

    route(path)

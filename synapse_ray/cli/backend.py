"""``synapse-ray backend``: run and feed the embedded local backend.

Commands only parse arguments and call :mod:`synapse_ray.localbackend`. The module
also runs standalone: ``python -m synapse_ray.cli.backend serve``.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from synapse_ray.backend import BackendError
from synapse_ray.localbackend import (
    LocalBackendServer,
    default_data_dir,
    load_or_create_token,
    register_dataset,
)
from synapse_ray.localbackend.server import is_loopback_host

__all__ = ["backend"]

_DATA_DIR_HELP = "Data directory of the local backend [default: $SYNAPSE_RAY_HOME or ~/.synapse_ray]."


def _data_dir(value: Path | None) -> Path:
    return value if value is not None else default_data_dir()


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=_DATA_DIR_HELP,
)


@click.group("backend", context_settings={"help_option_names": ["-h", "--help"]})
def backend() -> None:
    """Run and manage the embedded local backend (Synapse API on 127.0.0.1)."""


@backend.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8765, show_default=True, type=int, help="Port (0 picks a free one).")
@data_dir_option
@click.option(
    "--allow-remote",
    is_flag=True,
    help="Allow a --host other than loopback. The token then travels in cleartext HTTP.",
)
@click.option(
    "--public-url",
    default=None,
    help="Origin put in returned URLs (e.g. http://myhost:8765) [default: the listening address].",
)
@click.option("--test-mode", is_flag=True, hidden=True, help="Enable fault injection (tests only).")
def serve(
    host: str, port: int, data_dir: Path | None, allow_remote: bool, public_url: str | None, test_mode: bool
) -> None:
    """Serve the local backend in the foreground until Ctrl-C."""
    if not is_loopback_host(host):
        if not allow_remote:
            raise click.UsageError(
                f"--host {host} would expose the backend beyond this machine over plain HTTP, where "
                f"the access token travels in cleartext. Pass --allow-remote to do it anyway "
                f"(on a trusted network only), or keep the default --host 127.0.0.1."
            )
        click.echo(
            f"WARNING: listening on {host} over plain HTTP: the access token travels in cleartext. "
            f"Use only on a trusted network.",
            err=True,
        )
        if public_url is None and host.strip("[]") in ("0.0.0.0", "::"):
            click.echo(
                "  Returned file URLs name 127.0.0.1; pass --public-url http://THIS-HOST:PORT so "
                "they work from other machines.",
                err=True,
            )
    try:
        server = LocalBackendServer(
            _data_dir(data_dir), host=host, port=port, public_url=public_url, test_mode=test_mode
        )
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--public-url") from exc

    def ready(srv: LocalBackendServer) -> None:
        where = "" if is_loopback_host(srv.host) else f" (interface {srv.host})"
        click.echo(f"Local backend listening on {srv.url}{where} (data in {srv.data_dir})", err=True)
        click.echo(f"  export SYNAPSE_HOST={shlex.quote(srv.origin + '/')}", err=True)
        token_cmd = "synapse-ray backend token"
        if data_dir is not None:
            token_cmd += f" --data-dir {shlex.quote(str(srv.data_dir))}"
        click.echo(f'  export SYNAPSE_ACCESS_TOKEN="$({token_cmd})"', err=True)

    try:
        server.serve_forever(ready=ready)
    except OSError as exc:
        raise click.ClickException(f"Cannot listen on {host}:{port}: {exc}") from exc


@backend.command("add-dataset")
@click.argument("name")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@data_dir_option
@click.option(
    "--follow-symlinks",
    is_flag=True,
    help="Import files that links inside a directory point to, even outside it.",
)
def add_dataset(name: str, paths: tuple[Path, ...], data_dir: Path | None, follow_symlinks: bool) -> None:
    """Copy local files (or directories) into the store as a data collection.

    Prints the new data collection id as the only line on stdout.
    """
    try:
        collection_id = register_dataset(_data_dir(data_dir), name, paths, follow_symlinks=follow_symlinks)
    except BackendError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(str(collection_id))


@backend.command()
@data_dir_option
def token(data_dir: Path | None) -> None:
    """Print the local backend's access token (created on first use).

    Use as: export SYNAPSE_ACCESS_TOKEN="$(synapse-ray backend token)"
    """
    try:
        click.echo(load_or_create_token(_data_dir(data_dir)))
    except BackendError as exc:
        raise click.ClickException(str(exc)) from exc


if __name__ == "__main__":
    sys.exit(backend())

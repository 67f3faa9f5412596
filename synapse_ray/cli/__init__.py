"""``synapse-ray``: the command line. It only parses and calls the library."""

from __future__ import annotations

import click

from synapse_ray import __version__
from synapse_ray.cli.run import run
from synapse_ray.runtime.logging import configure_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="synapse-ray")
def main() -> None:
    """Run ML train actions locally or on a Ray cluster, and serve a local backend."""
    configure_logging(force=True)  # the CLI owns its process: logs to stderr, stdout is the result


main.add_command(run)

try:  # the Ray Jobs verbs live in their own module
    from synapse_ray.cli.jobs import list_jobs, logs, status, stop, submit

    for _command in (submit, status, logs, stop, list_jobs):
        main.add_command(_command)
except ImportError:  # pragma: no cover - only while the module is absent
    pass

try:  # the backend commands live in their own module
    from synapse_ray.cli.backend import backend

    main.add_command(backend)
except ImportError:  # pragma: no cover - only while the module is absent
    pass

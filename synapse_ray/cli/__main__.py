"""``python -m synapse_ray.cli``: the same as the ``synapse-ray`` command."""

from synapse_ray.cli import main

main(prog_name="synapse-ray")

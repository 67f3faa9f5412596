"""The parts of ``map_shards`` (see ``synapse_ray.parallel`` for the public surface)."""

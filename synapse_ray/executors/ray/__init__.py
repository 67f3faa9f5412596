"""Everything that knows about Ray: the executor, placement, workers, aggregator,
transport, connecting, resource checks, code shipping and error mapping."""

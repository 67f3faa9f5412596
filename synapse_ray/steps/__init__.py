"""Step-based workflows: steps, their registry, contexts and the orchestrator."""

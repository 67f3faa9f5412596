"""Executors decide where an action runs; step semantics stay in the orchestrator."""

"""Resource checks: a request no node can satisfy fails at once, naming what is missing.

Without this Ray queues the task or actor forever ("pending scheduling") and
the run hangs with no message.
"""

from __future__ import annotations

import time
from typing import Any

from synapse_ray.errors import ClusterError


def needs_of(options: dict[str, Any]) -> dict[str, float]:
    need: dict[str, float] = {}
    if options.get("num_cpus"):
        need["CPU"] = float(options["num_cpus"])
    if options.get("num_gpus"):
        need["GPU"] = float(options["num_gpus"])
    if options.get("memory"):
        need["memory"] = float(options["memory"])
    for key, value in (options.get("resources") or {}).items():
        need[key] = float(value)
    return need


class ResourceView:
    """The alive nodes' total resources, cached briefly (a GCS call each refresh)."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._nodes: list[dict[str, float]] = []
        self._at = 0.0

    def nodes(self) -> list[dict[str, float]]:
        import ray

        if time.monotonic() - self._at > self.ttl or not self._nodes:
            self._nodes = [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]
            self._at = time.monotonic()
        return self._nodes

    def check(self, what: str, options: dict[str, Any]) -> None:
        """Raise if no alive node could ever satisfy ``options`` (instead of hanging)."""
        need = needs_of(options)
        if not need:
            return
        nodes = self.nodes()
        if any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
            return
        self._at = 0.0  # maybe a node just joined: look again once
        nodes = self.nodes()
        if any(all(node.get(k, 0.0) >= v for k, v in need.items()) for node in nodes):
            return
        missing = []
        for key, value in need.items():
            best = max((node.get(key, 0.0) for node in nodes), default=0.0)
            if best < value:
                missing.append(f"{key}={value:g} (largest on any node: {best:g})")
        if not missing:
            missing.append("that combination on a single node")
        raise ClusterError(
            f"{what} needs {_fmt(need)}, which no node in the Ray cluster can provide: missing "
            + ", ".join(missing)
            + f". Cluster nodes: {len(nodes)}. Lower the request or add a node with these resources.",
            missing=missing,
        )


def _fmt(need: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in need.items())

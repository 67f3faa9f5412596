"""Resource checks: a request no node can satisfy fails at once, naming what is missing.

Without this Ray queues the task or actor forever ("pending scheduling") and
the run hangs with no message.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Held:
    """What the Ray worker calling us keeps on its node while it waits for work it submitted.

    A task blocked in ``ray.wait``/``ray.get`` lends Ray its CPU back but keeps its GPUs,
    memory and custom resources; an actor keeps everything. Work that needs what the
    caller keeps cannot run on the caller's node until the caller returns, which it
    never does while it waits for that work.
    """

    node_id: str
    resources: dict[str, float] = field(default_factory=dict)
    actor: bool = False

    def describe(self) -> str:
        kind = "actor (which keeps all it holds" if self.actor else "task (which keeps all but its CPU"
        return f"{kind} while it waits)"


def held_by_caller() -> Held | None:
    """What this process keeps while it waits, when it is a Ray task or actor; None on a driver."""
    import ray

    if not ray.is_initialized():
        return None
    ctx = ray.get_runtime_context()
    if ctx.worker.mode != ray.WORKER_MODE:
        return None  # a driver holds no cluster resources
    actor = ctx.get_actor_id() is not None
    held = {
        k: float(v)
        for k, v in ctx.get_assigned_resources().items()
        if v > 0 and (actor or k != "CPU")  # Ray lends a blocked task's CPU back, nothing else
    }
    return Held(ctx.get_node_id(), held, actor)


def _fits(node: dict[str, float], need: dict[str, float]) -> bool:
    return all(node.get(k, 0.0) >= v for k, v in need.items())


class ResourceView:
    """The alive nodes' total resources, cached briefly (a GCS call each refresh)."""

    def __init__(self, ttl: float = 5.0) -> None:
        self.ttl = ttl
        self._by_id: dict[str, dict[str, float]] = {}
        self._at = 0.0

    def _read(self) -> dict[str, dict[str, float]]:
        """Node id -> total resources of every alive node."""
        import ray

        return {n["NodeID"]: dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")}

    def _nodes_by_id(self) -> dict[str, dict[str, float]]:
        if time.monotonic() - self._at > self.ttl or not self._by_id:
            self._by_id = self._read()
            self._at = time.monotonic()
        return self._by_id

    def nodes(self, held: Held | None = None) -> list[dict[str, float]]:
        """Each node's totals; with ``held``, less what the waiting caller keeps on its node."""
        by_id = self._nodes_by_id()
        if held is None or not held.resources:
            return list(by_id.values())
        return [
            {k: v - held.resources.get(k, 0.0) for k, v in node.items()} if node_id == held.node_id else node
            for node_id, node in by_id.items()
        ]

    def _unfit(self, need: dict[str, float], held: Held | None = None) -> list[dict[str, float]] | None:
        """None if some node fits ``need``; else the nodes (looked at again once first: a
        node may just have joined)."""
        if any(_fits(node, need) for node in self.nodes(held)):
            return None
        self._at = 0.0
        nodes = self.nodes(held)
        return None if any(_fits(node, need) for node in nodes) else nodes

    def check(self, what: str, options: dict[str, Any]) -> None:
        """Raise if no alive node could ever satisfy ``options`` (instead of hanging)."""
        need = needs_of(options)
        if not need:
            return
        nodes = self._unfit(need)
        if nodes is None:
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

    def check_held(self, what: str, options: dict[str, Any], held: Held | None) -> None:
        """Raise if ``options`` fit a node only with what the caller keeps while it waits.

        Run after ``check``. Work submitted from a step that needs the step's own GPU (or an
        actor step's CPUs) stays pending forever: the step keeps them until the work is done.
        """
        need = needs_of(options)
        if held is None or not held.resources or not need:
            return
        left = self._unfit(need, held)
        if left is None:
            return
        mine = self._nodes_by_id().get(held.node_id, {})
        missing = []
        for key, value in need.items():
            if max((node.get(key, 0.0) for node in left), default=0.0) < value and key in held.resources:
                missing.append(
                    f"{key}={value:g} (the calling step holds {held.resources[key]:g} of the "
                    f"{mine.get(key, 0.0):g} on its node)"
                )
        if not missing:
            missing.append(
                "that combination on a single node once the calling step's "
                f"{_fmt(held.resources)} is taken out"
            )
        raise ClusterError(
            f"{what} needs {_fmt(need)}, which only the calling step's own resources could provide: "
            + ", ".join(missing)
            + f". The step runs as a Ray {held.describe()}, so this work would wait for it forever. "
            "Lower the step's request or the shards', or add a node with these resources.",
            missing=missing,
        )


def _fmt(need: dict[str, float]) -> str:
    return ", ".join(f"{k}={v:g}" for k, v in need.items())

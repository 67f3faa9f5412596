"""Live progress on the driver: a rich display on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from synapse_ray.runtime.progress import ProgressSnapshot, ShardCounts


def describe(snap: ProgressSnapshot) -> str:
    parts = [f"{snap.overall:5.1f}%", snap.status.value]
    if snap.current_step:
        step = snap.steps.get(snap.current_step)
        attempt = f" attempt {step.attempt}" if step and step.attempt > 1 else ""
        parts.append(f"step={snap.current_step}{attempt}")
    for name, cat in snap.categories.items():
        if name not in snap.shards:
            parts.append(f"{name}={cat.current:g}/{cat.total:g}")
    parts.extend(f"{name}: {shard_counts(counts)}" for name, counts in snap.shards.items())
    return " ".join(parts)


def shard_counts(counts: ShardCounts) -> str:
    """A ``map_shards`` fan-out in a few words: done of total, then only what is not zero."""
    total = counts.total if counts.total is not None else "?"
    words = [f"shards {counts.done}/{total}"]
    for key in ("running", "failed", "retried", "cancelled"):
        value = getattr(counts, key)
        if value:
            words.append(f"{key} {value}")
    return ", ".join(words)


def follow(handle: Any, stream: TextIO | None = None, quiet: bool = False) -> ProgressSnapshot:
    """Show progress until the run ends; returns the last snapshot."""
    stream = stream or sys.stderr
    if quiet:
        handle.wait()
        return handle.progress()
    if stream.isatty():
        return _follow_rich(handle, stream)
    return _follow_plain(handle, stream)


def _follow_plain(handle: Any, stream: TextIO, min_interval: float = 1.0) -> ProgressSnapshot:
    """A line when the status or step changes, else at most one per ``min_interval``."""
    snap = handle.progress()
    last_line, last_time, last_key = "", 0.0, None
    seen_warnings: set[str] = set()
    while True:
        line = describe(snap)
        now = time.monotonic()
        key = (snap.status, snap.current_step)
        if line != last_line and (
            key != last_key or now - last_time >= min_interval or snap.status.is_terminal
        ):
            print(f"[{handle.run_id}] {line}", file=stream, flush=True)
            last_line, last_time, last_key = line, now, key
        for warning in snap.warnings:
            if warning not in seen_warnings:
                seen_warnings.add(warning)
                print(f"[{handle.run_id}] warning: {warning}", file=stream, flush=True)
        if snap.status.is_terminal:
            return snap
        snap = handle.wait_for_update(snap.version, timeout=0.5)


def _follow_rich(handle: Any, stream: TextIO) -> ProgressSnapshot:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn

    console = Console(file=stream)
    columns = (
        TextColumn("{task.description:<24}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[info]}"),
    )
    with Progress(*columns, console=console, transient=False, redirect_stderr=True) as bar:
        overall = bar.add_task("overall", total=100, info="")
        rows: dict[str, Any] = {}
        snap = handle.progress()
        while True:
            bar.update(overall, completed=snap.overall, info=snap.status.value)
            for name, step in snap.steps.items():
                if name not in rows:
                    rows[name] = bar.add_task(f"  {name}", total=100, info="")
                info = step.status.value + (f" (attempt {step.attempt})" if step.attempt > 1 else "")
                fanouts = [shard_counts(c) for c in snap.shards.values() if c.step == name]
                info += "".join(f" | {f}" for f in fanouts)
                bar.update(rows[name], completed=step.percent, info=info)
            if snap.status.is_terminal:
                return snap
            snap = handle.wait_for_update(snap.version, timeout=0.5)
